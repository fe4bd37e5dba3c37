import doctest
import hashlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

import tfprune
from tfprune import datasets

DIGITS_COUNT = 1797  # images in scikit-learn's bundled digits data


def collect(dataset):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(images), np.concatenate(labels)


def bilinear_resize_reference(images, size):
    """NumPy bilinear resize with half-pixel centres (TF's convention), HxW axes 1, 2."""

    def along(array, axis):
        length = array.shape[axis]
        source = np.clip((np.arange(size) + 0.5) * length / size - 0.5, 0, length - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, length - 1)
        weight = (source - low).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
        return np.take(array, low, axis) * (1 - weight) + np.take(array, high, axis) * weight

    return along(along(images, 1), 2)


@pytest.fixture(scope="module")
def digits_arrays():
    return datasets.digits(as_numpy=True)


def test_digits_datasets_have_documented_shapes_dtypes_and_range():
    train_ds, test_ds = splits = datasets.digits(batch_size=50)

    images, labels = next(iter(train_ds))
    assert images.shape == (50, 32, 32, 3) and images.dtype == tf.float32
    assert labels.shape == (50,) and labels.dtype == tf.int32
    x_test, y_test = collect(test_ds)
    assert x_test.min() >= 0.0 and x_test.max() <= 1.0 and x_test.max() > 0.9
    assert set(np.unique(y_test)) == set(range(10))
    assert splits.info == datasets.DatasetInfo(
        name="digits",
        num_classes=10,
        input_shape=(32, 32, 3),
        train_size=DIGITS_COUNT - 360,
        test_size=360,  # ceil(0.2 * 1797)
    )
    assert splits.train is train_ds and splits.test is test_ds


def test_digits_images_are_the_scaled_and_bilinearly_resized_originals():
    original = load_digits()
    (x_train, y_train), (x_test, y_test) = datasets.digits(image_size=8, channels=1, as_numpy=True)
    images = np.concatenate([x_train, x_test])[..., 0]
    # The same 1797 images scaled from 0..16 to [0, 1], in some order.
    np.testing.assert_allclose(
        np.sort(images.reshape(len(images), -1), axis=0),
        np.sort(original.images.reshape(DIGITS_COUNT, -1) / 16.0, axis=0),
        atol=1e-6,
    )

    (x_small, _), _ = datasets.digits(image_size=8, channels=1, as_numpy=True, seed=3)
    (x_large, _), _ = datasets.digits(image_size=20, channels=3, as_numpy=True, seed=3)
    expected = bilinear_resize_reference(x_small[..., 0].astype("float64"), 20)
    for channel in range(3):
        np.testing.assert_allclose(x_large[..., channel], expected, atol=1e-5)


def test_digits_batched_test_split_equals_the_numpy_arrays(digits_arrays):
    _, (x_test, y_test) = digits_arrays
    _, test_ds = datasets.digits(batch_size=64)

    images, labels = collect(test_ds)

    np.testing.assert_array_equal(images, x_test)
    np.testing.assert_array_equal(labels, y_test)
    assert y_test.dtype == np.int32 and x_test.dtype == np.float32


def test_digits_split_is_disjoint_complete_and_stratified(digits_arrays):
    (x_train, y_train), (x_test, y_test) = digits_arrays

    def hashes(images):
        return {hashlib.sha1(image.tobytes()).hexdigest() for image in images}

    train_hashes, test_hashes = hashes(x_train), hashes(x_test)
    assert len(train_hashes) == len(x_train) and len(test_hashes) == len(x_test)
    assert not train_hashes & test_hashes
    assert len(x_train) + len(x_test) == DIGITS_COUNT
    class_counts = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * class_counts) <= 1)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10) + test_counts, class_counts)


def test_digits_is_deterministic_under_a_seed(digits_arrays):
    (x_train, y_train), (x_test, _) = digits_arrays

    (same_x_train, same_y_train), (same_x_test, _) = datasets.digits(as_numpy=True)
    (other_x_train, _), _ = datasets.digits(as_numpy=True, seed=1)

    np.testing.assert_array_equal(same_x_train, x_train)
    np.testing.assert_array_equal(same_y_train, y_train)
    np.testing.assert_array_equal(same_x_test, x_test)
    assert not np.array_equal(other_x_train, x_train)


def test_digits_training_shuffle_depends_on_seed_and_changes_every_epoch():
    def first_epoch_labels(seed):
        train_ds, _ = datasets.digits(image_size=8, batch_size=2000, seed=seed)
        return next(iter(train_ds))[1].numpy()

    first = first_epoch_labels(0)
    np.testing.assert_array_equal(first_epoch_labels(0), first)

    train_ds, _ = datasets.digits(image_size=8, batch_size=2000, seed=0)
    epoch_one, epoch_two = (next(iter(train_ds))[1].numpy() for _ in range(2))
    assert not np.array_equal(epoch_one, epoch_two)
    np.testing.assert_array_equal(np.sort(epoch_one), np.sort(epoch_two))

    unshuffled_ds, _ = datasets.digits(image_size=8, batch_size=2000, seed=0, shuffle=False)
    (_, y_train), _ = datasets.digits(image_size=8, as_numpy=True, seed=0)
    np.testing.assert_array_equal(next(iter(unshuffled_ds))[1].numpy(), y_train)
    assert not np.array_equal(first, y_train)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"image_size": 0}, r"`digits` expects `image_size`.*received image_size=0"),
        ({"channels": 2.5}, r"`channels`.*received channels=2.5"),
        ({"batch_size": "64"}, r"`batch_size`.*received batch_size='64'"),
        ({"test_fraction": 1.5}, r"`test_fraction`.*between 0 and 1.*test_fraction=1.5"),
        ({"seed": -1}, r"`seed` to be a non-negative integer.*seed=-1"),
    ],
)
def test_digits_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        datasets.digits(**arguments)


MOCK_EXAMPLES = 10


def mock_cifar(loader, tmp_path, **arguments):
    # TFDS's mock yields the same deterministic random examples for every split.
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        return loader(data_dir=str(tmp_path), batch_size=4, **arguments)


@pytest.mark.parametrize("loader, num_classes", [(datasets.cifar10, 10), (datasets.cifar100, 100)])
@pytest.mark.parametrize("augment", [False, True])
def test_cifar_pipelines_on_mock_data(tmp_path, loader, num_classes, augment):
    train_ds, test_ds = splits = mock_cifar(loader, tmp_path, augment=augment)

    for dataset in (train_ds, test_ds):
        images, labels = collect(dataset)
        assert images.shape == (MOCK_EXAMPLES, 32, 32, 3) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < num_classes
    assert next(iter(train_ds))[0].shape == (4, 32, 32, 3)
    assert splits.info.num_classes == num_classes
    assert splits.info.input_shape == (32, 32, 3)
    assert splits.info.train_size == MOCK_EXAMPLES


def test_cifar_resizes_to_image_size(tmp_path):
    raw, _ = mock_cifar(datasets.cifar10, tmp_path, shuffle=False)
    resized, _ = splits = mock_cifar(datasets.cifar10, tmp_path, image_size=48, shuffle=False)

    raw_images, _ = collect(raw)
    resized_images, _ = collect(resized)

    assert splits.info.input_shape == (48, 48, 3)
    expected = bilinear_resize_reference(raw_images.astype("float64"), 48)
    np.testing.assert_allclose(resized_images, expected, atol=1e-5)


def test_cifar_augmentation_is_a_padded_crop_or_its_mirror_of_train_only(tmp_path):
    plain_train, plain_test = mock_cifar(datasets.cifar10, tmp_path, shuffle=False)
    augmented_train, augmented_test = mock_cifar(
        datasets.cifar10, tmp_path, shuffle=False, augment=True
    )
    again_train, _ = mock_cifar(datasets.cifar10, tmp_path, shuffle=False, augment=True)
    other_train, _ = mock_cifar(datasets.cifar10, tmp_path, shuffle=False, augment=True, seed=7)

    originals, labels = collect(plain_train)
    augmented, augmented_labels = collect(augmented_train)
    np.testing.assert_array_equal(augmented_labels, labels)
    padded = np.pad(originals, ((0, 0), (4, 4), (4, 4), (0, 0)))  # 32 // 8 = 4 pixels
    for original, image in zip(padded, augmented):
        candidates = [
            crop
            for top in range(9)
            for left in range(9)
            for crop in [original[top : top + 32, left : left + 32]]
            for crop in (crop, crop[:, ::-1])
        ]
        assert any(np.array_equal(image, crop) for crop in candidates)
    assert not np.array_equal(augmented, originals)
    np.testing.assert_array_equal(collect(augmented_test)[0], collect(plain_test)[0])
    np.testing.assert_array_equal(collect(again_train)[0], augmented)
    assert not np.array_equal(collect(other_train)[0], augmented)


def test_cifar_without_data_and_without_download_raises_one_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(datasets.DatasetNotAvailableError) as error:
        datasets.cifar10(data_dir=str(empty))
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert f"data_dir='{empty}'" in message
    assert "tfds build cifar10" in message and "download=True" in message

    monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
    with pytest.raises(FileNotFoundError, match=r"`cifar100` data was not found in data_dir="):
        datasets.cifar100()


def test_cifar_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"`cifar10` expects `image_size`.*image_size=-3"):
        datasets.cifar10(data_dir=str(tmp_path), image_size=-3)
    with pytest.raises(ValueError, match=r"`cifar100` expects `batch_size`.*batch_size=0"):
        datasets.cifar100(data_dir=str(tmp_path), batch_size=0)


def test_public_names_and_docstring_examples():
    assert tfprune.datasets.digits is datasets.digits
    failures, _ = doctest.testmod(datasets, optionflags=doctest.ELLIPSIS)
    assert failures == 0
