import doctest
import gzip
import hashlib
import os
import re

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
    assert tfprune.datasets.fashion_mnist is datasets.fashion_mnist
    failures, _ = doctest.testmod(datasets, optionflags=doctest.ELLIPSIS)
    assert failures == 0


# Fashion-MNIST: small synthetic IDX files stand in for the real ones, except in
# the one test on the Debian package's files.

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array, type_code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_file(path, data, compress):
    with (gzip.open if compress else open)(path, "wb") as file:
        file.write(data)
    return str(path)


def write_fashion_mnist(directory, train_count=40, test_count=20, seed=0, compress=True):
    """Writes the four files with random images and balanced labels; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", train_count), ("test", test_count)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        images_name, labels_name = FASHION_FILES[split]
        suffix = ".gz" if compress else ""
        write_file(directory / (images_name + suffix), idx_bytes(images), compress)
        write_file(directory / (labels_name + suffix), idx_bytes(labels), compress)
        arrays[split] = (images, labels)
    return arrays["train"], arrays["test"]


@pytest.fixture
def downloads(monkeypatch):
    """Records every download fashion_mnist attempts; none reaches the network."""
    attempts = []

    def refuse_download():
        attempts.append("download")
        raise AssertionError("fashion_mnist tried to download")

    monkeypatch.setattr(datasets, "_download_fashion_mnist", refuse_download)
    return attempts


@pytest.fixture
def locations(tmp_path, monkeypatch, downloads):
    """Points every place fashion_mnist searches into tmp_path, all empty at first."""
    keras_home = tmp_path / "keras-home"
    keras_home.mkdir()
    debian = tmp_path / "debian"
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.delenv("TFPRUNE_FASHION_MNIST", raising=False)
    monkeypatch.setattr(datasets, "_DEBIAN_FASHION_MNIST_DIRECTORY", str(debian))
    return {
        "path": tmp_path / "explicit",
        "environment": tmp_path / "environment",
        "keras": keras_home / "datasets" / "fashion-mnist",
        "debian": debian,
    }


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array, type_code",
    [
        (np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), 0x08),
        (np.array([5, 0, 9, 255], dtype=np.uint8), 0x08),
        (np.array([[-3, 70000], [1, -(2**31)]], dtype=np.int32), 0x0C),
        (np.array([[0.5, -1.25, 3e38]], dtype=np.float32), 0x0D),
        (np.array([-2, 300], dtype=np.int16), 0x0B),
    ],
)
def test_read_idx_returns_the_array_plain_or_gzipped(tmp_path, array, type_code, compress):
    # The name never says whether the file is gzipped: the content does.
    path = write_file(tmp_path / "data-idx", idx_bytes(array, type_code), compress)

    result = datasets._read_idx(path)

    assert result.shape == array.shape and result.dtype == array.dtype
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_read_idx_reads_big_endian_dimensions_and_data(tmp_path):
    # 300 labels: a dimension above 255 needs the header's 4 big-endian bytes.
    header = bytes([0, 0, 0x0B, 1]) + bytes([0, 0, 1, 44])
    data = b"\x01\x02" * 300
    path = write_file(tmp_path / "labels-idx1-ubyte", header + data, compress=False)

    result = datasets._read_idx(path)

    assert result.shape == (300,)
    assert np.all(result == 0x0102)


GOOD_LABELS = idx_bytes(np.arange(10, dtype=np.uint8))


@pytest.mark.parametrize(
    "content, compress, reason",
    [
        (
            b"\x89PNG\r\n\x1a\n" + bytes(30),
            False,
            r"does not start with an IDX magic number.*89 50 4e 47",
        ),
        (
            b"\x00\x00\x07\x01" + bytes(14),
            False,
            r"does not start with an IDX magic number.*00 00 07 01",
        ),
        (b"", False, r"does not start with an IDX magic number.*but with nothing"),
        (
            bytes([0, 0, 8, 3, 0, 0]),
            False,
            r"announces 3 dimensions but the file ends after 6 bytes",
        ),
        (GOOD_LABELS[:-1], False, r"announces shape \(10,\) \(10 bytes of data\) but it holds 9"),
        (
            GOOD_LABELS + b"\x00",
            True,
            r"announces shape \(10,\) \(10 bytes of data\) but it holds 11",
        ),
        (gzip.compress(GOOD_LABELS)[:-6], False, r"it is a damaged gzip file"),
    ],
    ids=["png", "type-code", "empty", "short-header", "short-data", "long-data", "damaged-gzip"],
)
def test_read_idx_refuses_a_corrupt_file_naming_it(tmp_path, content, compress, reason):
    path = write_file(tmp_path / "t10k-labels-idx1-ubyte.gz", content, compress)

    with pytest.raises(ValueError) as error:
        datasets._read_idx(path)

    message = str(error.value)
    assert message.startswith(f"`fashion_mnist` cannot use '{path}': ")
    assert re.search(reason, message)
    assert "make fashion-mnist" in message and message.endswith(".")


@pytest.mark.parametrize(
    "split, file_index, array, reason",
    [
        ("train", 0, np.zeros((40, 27, 28), np.uint8), r"holds uint8 data of shape \(40, 27, 28\)"),
        ("train", 0, np.zeros((40, 28, 28), np.float32), r"holds float32 data"),
        (
            "test",
            1,
            np.zeros((20, 1), np.uint8),
            r"holds uint8 data of shape \(20, 1\), not uint8 labels of shape \(count,\)",
        ),
        ("test", 1, np.arange(21, dtype=np.uint8) % 10, r"holds 21 labels for the 20 images of '"),
        ("test", 1, np.full(20, 10, np.uint8), r"holds the label 10, outside Fashion-MNIST's 0..9"),
    ],
)
def test_fashion_mnist_refuses_files_that_are_not_fashion_mnist(
    locations, split, file_index, array, reason
):
    directory = locations["path"]
    write_fashion_mnist(directory, compress=False)
    bad = directory / FASHION_FILES[split][file_index]
    type_code = 0x0D if array.dtype == np.float32 else 0x08
    write_file(bad, idx_bytes(array, type_code), compress=False)

    with pytest.raises(ValueError, match=rf"cannot use '{re.escape(str(bad))}': it {reason}"):
        datasets.fashion_mnist(path=directory, as_numpy=True)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_arrays_are_the_files_scaled_to_unit_range(locations, compress):
    (train_images, train_labels), (test_images, test_labels) = write_fashion_mnist(
        locations["path"], compress=compress
    )

    splits = datasets.fashion_mnist(path=str(locations["path"]), as_numpy=True)
    (x_train, y_train), (x_test, y_test) = splits

    assert x_train.shape == (40, 28, 28, 1) and x_test.shape == (20, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(x_train[..., 0], train_images.astype("float32") / 255)
    np.testing.assert_array_equal(x_test[..., 0], test_images.astype("float32") / 255)
    np.testing.assert_array_equal(y_train, train_labels)
    np.testing.assert_array_equal(y_test, test_labels)
    assert splits.info == datasets.DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        input_shape=(28, 28, 1),
        train_size=40,
        test_size=20,
        source=str(locations["path"]),
    )


def test_fashion_mnist_resizes_bilinearly_and_repeats_channels(locations):
    write_fashion_mnist(locations["path"])

    (x_small, _), _ = datasets.fashion_mnist(path=locations["path"], as_numpy=True)
    (x_large, _), (x_test, _) = splits = datasets.fashion_mnist(
        path=locations["path"], image_size=40, channels=3, as_numpy=True
    )

    assert x_large.shape == (40, 40, 40, 3) and x_test.shape == (20, 40, 40, 3)
    assert splits.info.input_shape == (40, 40, 3)
    expected = bilinear_resize_reference(x_small[..., 0].astype("float64"), 40)
    for channel in range(3):
        np.testing.assert_allclose(x_large[..., channel], expected, atol=1e-5)


def test_fashion_mnist_datasets_equal_the_numpy_arrays(locations):
    write_fashion_mnist(locations["path"])
    arguments = dict(path=locations["path"], image_size=32, channels=3)
    (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist(as_numpy=True, **arguments)

    train_ds, test_ds = datasets.fashion_mnist(batch_size=16, shuffle=False, **arguments)

    images, labels = next(iter(test_ds))
    assert images.shape == (16, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    for dataset, x, y in ((train_ds, x_train, y_train), (test_ds, x_test, y_test)):
        images, labels = collect(dataset)
        np.testing.assert_allclose(images, x, atol=1e-6)
        np.testing.assert_array_equal(labels, y)


def test_fashion_mnist_training_shuffle_depends_on_seed_and_changes_every_epoch(locations):
    (_, file_labels), _ = write_fashion_mnist(locations["path"])

    def labels_of_epochs(seed, epochs=1):
        train_ds, _ = datasets.fashion_mnist(path=locations["path"], batch_size=100, seed=seed)
        return [next(iter(train_ds))[1].numpy() for _ in range(epochs)]

    epoch_one, epoch_two = labels_of_epochs(0, epochs=2)
    np.testing.assert_array_equal(labels_of_epochs(0)[0], epoch_one)
    assert not np.array_equal(labels_of_epochs(5)[0], epoch_one)
    assert not np.array_equal(epoch_one, epoch_two)
    assert not np.array_equal(epoch_one, file_labels)
    np.testing.assert_array_equal(np.sort(epoch_one), np.sort(file_labels))
    np.testing.assert_array_equal(np.sort(epoch_two), np.sort(file_labels))


def test_fashion_mnist_subsamples_are_stratified_in_file_order_and_seeded(locations):
    (train_images, train_labels), (test_images, _) = write_fashion_mnist(
        locations["path"], train_count=200, test_count=50
    )

    def load(seed):
        return datasets.fashion_mnist(
            path=locations["path"], train_size=30, test_size=20, seed=seed, as_numpy=True
        )

    (x_train, y_train), (x_test, y_test) = splits = load(seed=0)

    assert splits.info.train_size == 30 and splits.info.test_size == 20
    assert x_train.shape == (30, 28, 28, 1) and x_test.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), np.full(10, 3))
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), np.full(10, 2))
    # The kept images are file images, in file order.
    file_rows = {image.tobytes(): row for row, image in enumerate(train_images)}
    rows = [
        file_rows[(image[..., 0] * 255).round().astype(np.uint8).tobytes()] for image in x_train
    ]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(y_train, train_labels[rows])
    (same_x_train, _), (same_x_test, _) = load(seed=0)
    np.testing.assert_array_equal(same_x_train, x_train)
    np.testing.assert_array_equal(same_x_test, x_test)
    (other_x_train, _), _ = load(seed=1)
    assert not np.array_equal(other_x_train, x_train)
    (all_x_train, _), _ = datasets.fashion_mnist(
        path=locations["path"], train_size=200, as_numpy=True
    )
    assert len(all_x_train) == 200


def test_fashion_mnist_searches_path_then_variable_then_keras_cache_then_debian(
    locations, monkeypatch, downloads
):
    # Each place holds different images (a different seed), so what is read tells where from.
    first_images = {}
    for seed, place in enumerate(("path", "environment", "keras", "debian")):
        (images, _), _ = write_fashion_mnist(locations[place], seed=seed, compress=seed % 2 == 0)
        first_images[place] = images[0].astype("float32") / 255
    monkeypatch.setenv("TFPRUNE_FASHION_MNIST", str(locations["environment"]))

    def read(**arguments):
        (x_train, _), _ = splits = datasets.fashion_mnist(as_numpy=True, **arguments)
        return splits.info.source, x_train[0, ..., 0]

    def assert_read_from(place, **arguments):
        source, first = read(**arguments)
        assert source == str(locations[place])
        np.testing.assert_array_equal(first, first_images[place])

    assert_read_from("path", path=locations["path"])
    assert_read_from("environment")
    monkeypatch.delenv("TFPRUNE_FASHION_MNIST")
    assert_read_from("keras")
    os.remove(locations["keras"] / "t10k-labels-idx1-ubyte.gz")  # an incomplete cache is skipped
    assert_read_from("debian")
    assert_read_from("debian", download=True)
    assert downloads == []


def test_fashion_mnist_reads_keras_cache_from_home_when_keras_home_is_unset(
    locations, tmp_path, monkeypatch
):
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_fashion_mnist(tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist")

    splits = datasets.fashion_mnist(as_numpy=True)

    assert splits.info.source == str(tmp_path / "home" / ".keras" / "datasets" / "fashion-mnist")


@pytest.mark.parametrize("explicit", ["path", "environment"])
def test_fashion_mnist_explicit_location_lacking_a_file_is_an_error_not_skipped(
    locations, monkeypatch, downloads, explicit
):
    write_fashion_mnist(locations["debian"])
    write_fashion_mnist(locations[explicit])
    os.remove(locations[explicit] / "train-images-idx3-ubyte.gz")
    arguments = {"download": True}
    if explicit == "path":
        arguments["path"] = locations["path"]
        label = "path="
    else:
        monkeypatch.setenv("TFPRUNE_FASHION_MNIST", str(locations["environment"]))
        label = "$TFPRUNE_FASHION_MNIST="

    with pytest.raises(datasets.DatasetNotAvailableError) as error:
        datasets.fashion_mnist(**arguments)

    message = str(error.value)
    assert message.startswith(
        f"Fashion-MNIST was not found in {label}'{locations[explicit]}' "
        "(lacks train-images-idx3-ubyte[.gz]), and no other place is searched when one is named: "
    )
    assert str(locations["debian"]) not in message
    assert downloads == []


def test_fashion_mnist_without_files_raises_one_sentence_saying_how_to_get_them(
    locations, downloads
):
    locations["keras"].mkdir(parents=True)
    write_fashion_mnist(locations["debian"])
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.remove(locations["debian"] / name)

    with pytest.raises(datasets.DatasetNotAvailableError) as error:
        datasets.fashion_mnist()

    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert message.startswith(
        f"Fashion-MNIST was not found in Keras's cache '{locations['keras']}' (lacks "
        "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz]); the Debian package's directory "
        f"'{locations['debian']}' (lacks t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz]), and download=False: "
    )
    for how in (
        "`dataset-fashion-mnist` with `make fashion-mnist`",
        "`sudo apt-get install dataset-fashion-mnist`",
        "pass path= (or set $TFPRUNE_FASHION_MNIST)",
        "pass download=True",
    ):
        assert how in message
    # One sentence: a single line whose only full stop ends it.
    assert "\n" not in message and message.endswith(".")
    assert not re.search(r"\.\s", message)
    assert downloads == []

    os.rmdir(locations["keras"])
    with pytest.raises(
        datasets.DatasetNotAvailableError, match=r"cache '.*' \(no such directory\)"
    ):
        datasets.fashion_mnist(as_numpy=True)


def test_fashion_mnist_downloads_only_when_asked_and_nothing_is_local(locations, monkeypatch):
    train, test = write_fashion_mnist(locations["debian"].parent / "download-source", seed=9)
    calls = []

    def fake_download():
        calls.append("download")
        return train, test

    monkeypatch.setattr(datasets, "_download_fashion_mnist", fake_download)

    with pytest.raises(datasets.DatasetNotAvailableError, match=r"and download=False: "):
        datasets.fashion_mnist(as_numpy=True)
    assert calls == []

    (x_train, y_train), _ = splits = datasets.fashion_mnist(as_numpy=True, download=True)
    assert calls == ["download"]
    assert splits.info.source == "keras.datasets.fashion_mnist.load_data()"
    np.testing.assert_array_equal(x_train[..., 0], train[0].astype("float32") / 255)
    np.testing.assert_array_equal(y_train, train[1])

    def failed_download():
        raise OSError("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(datasets, "_download_fashion_mnist", failed_download)
    with pytest.raises(datasets.DatasetNotAvailableError) as error:
        datasets.fashion_mnist(download=True)
    message = str(error.value)
    assert "and the download through keras.datasets failed (URL fetch failure on" in message
    assert "make fashion-mnist" in message


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"image_size": 0}, r"`fashion_mnist` expects `image_size`.*received image_size=0"),
        ({"channels": 0}, r"`fashion_mnist` expects `channels`.*received channels=0"),
        ({"batch_size": 2.0}, r"`batch_size`.*received batch_size=2.0"),
        ({"seed": -1}, r"`seed` to be a non-negative integer.*seed=-1"),
        ({"train_size": 5}, r"`train_size` to be None or at least 10.*train_size=5"),
        ({"test_size": 0}, r"`test_size` to be a positive integer.*test_size=0"),
        (
            {"test_size": 21},
            r"`test_size` to be at most 20, the images in that split.*test_size=21",
        ),
        ({"download": "yes"}, r"`download` to be True or False; received download='yes'"),
    ],
)
def test_fashion_mnist_rejects_bad_arguments(locations, arguments, message):
    write_fashion_mnist(locations["path"])
    with pytest.raises(ValueError, match=message):
        datasets.fashion_mnist(path=locations["path"], as_numpy=True, **arguments)


DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def test_fashion_mnist_reads_the_debian_package(tmp_path, monkeypatch, downloads):
    if not os.path.isfile(os.path.join(DEBIAN_FASHION_MNIST, "t10k-labels-idx1-ubyte.gz")):
        pytest.skip(
            f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION_MNIST} "
            "lacks its files); `make fashion-mnist` installs it"
        )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty Keras cache
    monkeypatch.delenv("TFPRUNE_FASHION_MNIST", raising=False)

    (x_train, y_train), (x_test, y_test) = splits = datasets.fashion_mnist(as_numpy=True)

    assert splits.info == datasets.DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        input_shape=(28, 28, 1),
        train_size=60_000,
        test_size=10_000,
        source=DEBIAN_FASHION_MNIST,
    )
    assert x_train.shape == (60_000, 28, 28, 1) and x_test.shape == (10_000, 28, 28, 1)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6_000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1_000))
    # Real photographs of clothes on a black background, not noise: the mean
    # training pixel is Fashion-MNIST's well-known 0.2860.
    assert abs(float(x_train.mean()) - 0.2860) < 1e-3
    assert downloads == []
