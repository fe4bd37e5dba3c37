"""Image classification data for demos, tests and benchmarks.

`digits()` is the offline default: scikit-learn's bundled 8x8 handwritten
digits (1797 images, read from the installed package, never downloaded),
resized to a small RGB image. `cifar10()` and `cifar100()` read CIFAR through
tensorflow-datasets and never download unless asked to (`download=True`).

Every loader returns a `Splits`: a `(train, test)` pair, so
`train_ds, test_ds = tfprune.datasets.digits()` works, which also carries a
`DatasetInfo` in `.info` (number of classes, input shape, split sizes).
Images are float32 in [0, 1], channels last; labels are int32 class indices.
"""

import dataclasses
import os

import numpy as np

from tfprune._utils import LazyModule

tf = LazyModule("tensorflow")  # tf.data is TensorFlow's; imported when a dataset is built


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about a loaded dataset.

    Args:
        name: String. The dataset name, e.g. `"digits"`.
        num_classes: Int. Number of classes; labels are in `[0, num_classes)`.
        input_shape: Tuple `(height, width, channels)` of one image.
        train_size: Int or None. Number of training examples (None if unknown).
        test_size: Int or None. Number of test examples (None if unknown).

    Example:

    >>> import tfprune
    >>> tfprune.datasets.digits(image_size=16).info.input_shape
    (16, 16, 3)
    """

    name: str
    num_classes: int
    input_shape: tuple
    train_size: object
    test_size: object


class Splits(tuple):
    """A `(train, test)` pair that also carries a `DatasetInfo`.

    It unpacks like a tuple (`train, test = splits`) and offers `.train`,
    `.test` and `.info`.

    Args:
        train: The training split (a `tf.data.Dataset` or an `(x, y)` pair).
        test: The test split, of the same kind.
        info: A `DatasetInfo`.

    Example:

    >>> import tfprune
    >>> splits = tfprune.datasets.digits(as_numpy=True)
    >>> (x_train, y_train), (x_test, y_test) = splits
    >>> splits.info.num_classes, x_train.shape[1:]
    (10, (32, 32, 3))
    """

    def __new__(cls, train, test, info):
        splits = super().__new__(cls, (train, test))
        splits.info = info
        return splits

    @property
    def train(self):
        """The training split."""
        return self[0]

    @property
    def test(self):
        """The test split."""
        return self[1]


class DatasetNotAvailableError(FileNotFoundError):
    """Raised when a dataset is not prepared in `data_dir` and `download=False`."""


def digits(
    image_size=32,
    channels=3,
    batch_size=64,
    test_fraction=0.2,
    seed=0,
    shuffle=True,
    as_numpy=False,
):
    """Loads scikit-learn's handwritten digits as a small image dataset, offline.

    The 1797 8x8 grey images of `sklearn.datasets.load_digits` (bundled with
    scikit-learn, no download) are scaled from 0..16 to [0, 1], resized
    bilinearly to `image_size` x `image_size` (`tf.image.resize`) and
    repeated over `channels`. The train/test split is stratified (each digit
    keeps its share in both splits) and depends only on `seed`; no image is in
    both splits.

    Args:
        image_size: Int. Height and width of the returned images. Defaults to 32.
        channels: Int. Number of identical channels. Defaults to 3 (RGB models).
        batch_size: Int. Batch size of the returned datasets. Defaults to 64.
        test_fraction: Float in (0, 1). Share of the images in the test split.
            Defaults to 0.2.
        seed: Int. Fixes the split and the training shuffle order (the order
            also depends on TensorFlow's global seed if one is set, e.g. by
            `keras.utils.set_random_seed`). Defaults to 0.
        shuffle: Bool. Whether the training dataset is reshuffled every epoch
            (deterministically under `seed`). The test dataset never is.
            Defaults to True.
        as_numpy: Bool. If True, returns NumPy arrays instead of datasets
            (unbatched, unshuffled). Defaults to False.

    Returns:
        A `Splits` `(train, test)` with `.info` (`num_classes=10`). Each split
        is a batched `tf.data.Dataset` of `(images, labels)`: float32 images of
        shape `(batch, image_size, image_size, channels)` in [0, 1] and int32
        labels; with `as_numpy=True` each split is a pair of arrays
        `(x, y)`.

    Raises:
        ValueError: If an argument is out of range.

    Example:

    >>> import tfprune
    >>> train_ds, test_ds = tfprune.datasets.digits(image_size=16, batch_size=32)
    >>> images, labels = next(iter(train_ds))
    >>> tuple(images.shape), labels.dtype.name
    ((32, 16, 16, 3), 'int32')
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_common_arguments("digits", image_size, batch_size, seed)
    _check_positive_int("digits", "channels", channels)
    if not isinstance(test_fraction, float) or not 0.0 < test_fraction < 1.0:
        raise ValueError(
            "`digits` expects `test_fraction` to be a float strictly between 0 and 1; "
            f"received test_fraction={test_fraction!r}. Pass e.g. test_fraction=0.2."
        )
    data = load_digits()
    images = (data.images / 16.0).astype("float32")[..., np.newaxis]
    images = tf.image.resize(images, (image_size, image_size), method="bilinear").numpy()
    images = np.repeat(images, channels, axis=-1)
    labels = data.target.astype("int32")
    train_index, test_index = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        input_shape=(image_size, image_size, channels),
        train_size=len(train_index),
        test_size=len(test_index),
    )
    train = (images[train_index], labels[train_index])
    test = (images[test_index], labels[test_index])
    if as_numpy:
        return Splits(train, test, info)
    train_ds = tf.data.Dataset.from_tensor_slices(train)
    if shuffle:
        train_ds = train_ds.shuffle(len(train_index), seed=seed, reshuffle_each_iteration=True)
    test_ds = tf.data.Dataset.from_tensor_slices(test)
    return Splits(_finish(train_ds, batch_size), _finish(test_ds, batch_size), info)


def cifar10(
    data_dir=None,
    image_size=32,
    augment=False,
    batch_size=64,
    seed=0,
    shuffle=True,
    download=False,
):
    """Loads CIFAR-10 through tensorflow-datasets.

    Images are scaled to [0, 1] and, if `image_size` is not 32, resized
    bilinearly. With `augment=True` the training images (only) are padded by
    `image_size // 8` pixels of zeros, randomly cropped back to `image_size`
    and randomly flipped left-right, the usual CIFAR augmentation; the random
    draws depend only on `seed` and differ between epochs.

    Args:
        data_dir: String or None. The TFDS data directory; None uses TFDS's
            default (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        image_size: Int. Height and width of the returned images. Defaults to 32.
        augment: Bool. Whether to augment the training split. Defaults to False.
        batch_size: Int. Batch size of both datasets. Defaults to 64.
        seed: Int. Fixes the shuffle order and the augmentation (together with
            TensorFlow's global seed, if one is set). Defaults to 0.
        shuffle: Bool. Whether the training dataset is reshuffled every epoch.
            Defaults to True.
        download: Bool. Whether TFDS may download and prepare the data if
            `data_dir` does not hold it. Defaults to False (no network).

    Returns:
        A `Splits` `(train_ds, test_ds)` of batched `tf.data.Dataset`s of
        `(images, labels)`: float32 images `(batch, image_size, image_size, 3)`
        in [0, 1], int32 labels; `.info.num_classes` is 10.

    Raises:
        DatasetNotAvailableError: A `FileNotFoundError` raised if the data is
            not in `data_dir` and `download` is False.
        ValueError: If an argument is out of range.

    Example:

    >>> import tfprune
    >>> train_ds, test_ds = tfprune.datasets.cifar10(data_dir="~/tfds")  # doctest: +SKIP
    """
    return _load_tfds(
        "cifar10",
        10,
        data_dir=data_dir,
        image_size=image_size,
        augment=augment,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        download=download,
    )


def cifar100(
    data_dir=None,
    image_size=32,
    augment=False,
    batch_size=64,
    seed=0,
    shuffle=True,
    download=False,
):
    """Loads CIFAR-100 (the 100 fine labels) through tensorflow-datasets.

    The same pipeline and arguments as `cifar10`.

    Args:
        data_dir: String or None. The TFDS data directory; None uses TFDS's
            default (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
        image_size: Int. Height and width of the returned images. Defaults to 32.
        augment: Bool. Whether to augment the training split (pad, random crop,
            random left-right flip). Defaults to False.
        batch_size: Int. Batch size of both datasets. Defaults to 64.
        seed: Int. Fixes the shuffle order and the augmentation (together with
            TensorFlow's global seed, if one is set). Defaults to 0.
        shuffle: Bool. Whether the training dataset is reshuffled every epoch.
            Defaults to True.
        download: Bool. Whether TFDS may download and prepare the data if
            `data_dir` does not hold it. Defaults to False (no network).

    Returns:
        A `Splits` `(train_ds, test_ds)` like `cifar10`'s, with
        `.info.num_classes` 100.

    Raises:
        DatasetNotAvailableError: A `FileNotFoundError` raised if the data is
            not in `data_dir` and `download` is False.
        ValueError: If an argument is out of range.

    Example:

    >>> import tfprune
    >>> train_ds, test_ds = tfprune.datasets.cifar100(data_dir="~/tfds")  # doctest: +SKIP
    """
    return _load_tfds(
        "cifar100",
        100,
        data_dir=data_dir,
        image_size=image_size,
        augment=augment,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        download=download,
    )


def _load_tfds(
    name, num_classes, data_dir, image_size, augment, batch_size, seed, shuffle, download
):
    import tensorflow_datasets as tfds

    _check_common_arguments(name, image_size, batch_size, seed)
    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    try:
        train_ds, test_ds = tfds.load(
            name, split=["train", "test"], data_dir=data_dir, download=download, as_supervised=True
        )
    except AssertionError:
        # TFDS signals "not prepared and download=False" with an AssertionError.
        location = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
        raise DatasetNotAvailableError(
            f"`{name}` data was not found in data_dir='{location}' and download=False; "
            f"run `tfds build {name}` on a machine with internet access and copy its data "
            f"directory here (or pass data_dir=...), or pass download=True."
        ) from None
    info = DatasetInfo(
        name=name,
        num_classes=num_classes,
        input_shape=(image_size, image_size, 3),
        train_size=_size(train_ds),
        test_size=_size(test_ds),
    )

    def preprocess(image, label):
        image = tf.cast(image, "float32") / 255.0
        if image_size != 32:
            image = tf.image.resize(image, (image_size, image_size), method="bilinear")
        return image, tf.cast(label, "int32")

    if shuffle:
        train_ds = train_ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    train_ds = train_ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        # One stateless seed pair per example: deterministic under `seed`,
        # different in every epoch.
        random_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        train_ds = tf.data.Dataset.zip((train_ds, random_seeds)).map(
            lambda example, random_seed: _augment(*example, random_seed, image_size),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    test_ds = test_ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    return Splits(_finish(train_ds, batch_size), _finish(test_ds, batch_size), info)


def _augment(image, label, random_seed, image_size):
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(random_seed, 2))
    padded_size = image_size + 2 * (image_size // 8)
    image = tf.image.resize_with_crop_or_pad(image, padded_size, padded_size)
    image = tf.image.stateless_random_crop(image, (image_size, image_size, 3), seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image, label


def _finish(dataset, batch_size):
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _size(dataset):
    size = int(dataset.cardinality())
    return size if size >= 0 else None


def _check_positive_int(caller, name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"`{caller}` expects `{name}` to be a positive integer; "
            f"received {name}={value!r}. Pass an integer of at least 1."
        )


def _check_common_arguments(caller, image_size, batch_size, seed):
    _check_positive_int(caller, "image_size", image_size)
    _check_positive_int(caller, "batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(
            f"`{caller}` expects `seed` to be a non-negative integer; "
            f"received seed={seed!r}. Pass e.g. seed=0."
        )
