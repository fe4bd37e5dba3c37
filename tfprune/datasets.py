"""Image classification data for demos, tests and benchmarks.

`digits()` is the offline default: scikit-learn's bundled 8x8 handwritten
digits (1797 images, read from the installed package, never downloaded),
resized to a small RGB image. `fashion_mnist()` reads Fashion-MNIST's four IDX
files from a directory you name, Keras's dataset cache or the directory of
Debian's `dataset-fashion-mnist` package (`make fashion-mnist` installs it).
`cifar10()` and `cifar100()` read CIFAR through tensorflow-datasets. None of
them downloads unless asked to (`download=True`).

Every loader returns a `Splits`: a `(train, test)` pair, so
`train_ds, test_ds = tfprune.datasets.digits()` works, which also carries a
`DatasetInfo` in `.info` (number of classes, input shape, split sizes).
Images are float32 in [0, 1], channels last; labels are int32 class indices.
"""

import dataclasses
import os

import keras
import numpy as np

from tfprune._idx_files import (
    _FASHION_MNIST_IMAGE_SIZE,
    _check_fashion_mnist_split,
    _fashion_mnist_files,
    _keras_cache_directories,
    _read_fashion_mnist_split,
)
from tfprune._idx_files import _read_idx as _read_idx  # read by the tests
from tfprune._image_pipelines import (
    _augment,
    _check_common_arguments,
    _check_positive_int,
    _finish,
    _scale_and_resize,
    _size,
    _stratified_subset,
)
from tfprune._optional import OptionalModule, require

__all__ = [
    "FASHION_MNIST_ENVIRONMENT_VARIABLE",
    "DatasetInfo",
    "DatasetNotAvailableError",
    "Splits",
    "cifar10",
    "cifar100",
    "digits",
    "fashion_mnist",
]

# tf.data is TensorFlow's; imported when a dataset is built.
tf = OptionalModule("tensorflow", "The tf.data form of tfprune.datasets (as_numpy=False)")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about a loaded dataset.

    Args:
        name: String. The dataset name, e.g. `"digits"`.
        num_classes: Int. Number of classes; labels are in `[0, num_classes)`.
        input_shape: Tuple `(height, width, channels)` of one image.
        train_size: Int or None. Number of training examples (None if unknown).
        test_size: Int or None. Number of test examples (None if unknown).
        source: String or None. Where the data was read from (a directory, or
            the download), for loaders that search several places; None for
            the others. Defaults to None.

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
    source: object = None


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
    """Raised when a dataset is not prepared in `data_dir` and `download=False`.

    A `FileNotFoundError`; its message names where tfprune looked and how to
    prepare the data.

    Example:

    >>> import tempfile, tfprune
    >>> try:
    ...     tfprune.datasets.fashion_mnist(path=tempfile.mkdtemp())
    ... except tfprune.datasets.DatasetNotAvailableError as error:
    ...     print(type(error).__name__, isinstance(error, FileNotFoundError))
    DatasetNotAvailableError True
    """


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
    bilinearly to `image_size` x `image_size` (`keras.ops.image.resize`) and
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
    images = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (image_size, image_size)))
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


FASHION_MNIST_ENVIRONMENT_VARIABLE = "TFPRUNE_FASHION_MNIST"
# Where Debian's `dataset-fashion-mnist` package installs the four gzipped files.
_DEBIAN_FASHION_MNIST_DIRECTORY = "/usr/share/datasets/fashion-mnist"
def fashion_mnist(
    path=None,
    image_size=28,
    channels=1,
    batch_size=64,
    train_size=None,
    test_size=None,
    seed=0,
    shuffle=True,
    as_numpy=False,
    download=False,
):
    """Loads Fashion-MNIST (Zalando's 70,000 28x28 grey clothing images), offline.

    The four IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
    `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each gzipped or not)
    are read from the first directory that holds all four: `path`, else
    `$TFPRUNE_FASHION_MNIST`, else Keras's dataset cache
    (`$KERAS_HOME/datasets/fashion-mnist`, by default
    `~/.keras/datasets/fashion-mnist`, where
    `keras.datasets.fashion_mnist.load_data()` leaves them), else Debian's
    package directory `/usr/share/datasets/fashion-mnist` (`make
    fashion-mnist`, or `apt-get install dataset-fashion-mnist`). A `path` or
    `$TFPRUNE_FASHION_MNIST` that lacks a file is an error, not skipped. Only
    with `download=True`, and only when no directory holds the files, are they
    downloaded through `keras.datasets.fashion_mnist.load_data()` (which caches
    them for the next call).

    The images are scaled from 0..255 to [0, 1], resized bilinearly to
    `image_size` x `image_size` if that is not 28, and repeated over
    `channels`. The splits are the dataset's own (60,000 train, 10,000 test);
    `train_size` and `test_size` keep a class-stratified subsample of them
    drawn under `seed`, in file order.

    Args:
        path: String, path-like or None. A directory holding the four files.
            Defaults to None (search as above).
        image_size: Int. Height and width of the returned images. Defaults to
            28 (the original size).
        channels: Int. Number of identical channels. Defaults to 1 (pass 3 for
            RGB models).
        batch_size: Int. Batch size of the returned datasets. Defaults to 64.
        train_size: Int or None. Number of training images to keep, at least
            10 (one per class); None keeps all 60,000. Defaults to None.
        test_size: Int or None. Number of test images to keep, at least 10;
            None keeps all 10,000. Defaults to None.
        seed: Int. Fixes the subsamples and the training shuffle order (the
            order also depends on TensorFlow's global seed if one is set, e.g.
            by `keras.utils.set_random_seed`). Defaults to 0.
        shuffle: Bool. Whether the training dataset is reshuffled every epoch
            (deterministically under `seed`). The test dataset never is.
            Defaults to True.
        as_numpy: Bool. If True, returns NumPy arrays instead of datasets
            (unbatched, in file order). Defaults to False.
        download: Bool. Whether the files may be downloaded through
            `keras.datasets` if no directory holds them. Defaults to False (no
            network).

    Returns:
        A `Splits` `(train, test)` with `.info` (`num_classes=10`, `source` the
        directory read). Each split is a batched `tf.data.Dataset` of
        `(images, labels)`: float32 images of shape
        `(batch, image_size, image_size, channels)` in [0, 1] and int32 labels;
        with `as_numpy=True` each split is a pair of arrays `(x, y)`.

    Raises:
        DatasetNotAvailableError: A `FileNotFoundError` raised if no directory
            holds the files and `download` is False (or the download failed);
            its one sentence says how to get them.
        ValueError: If an argument is out of range, or if a file is not a
            Fashion-MNIST IDX file (the message names the file).

    Example:

    >>> import tfprune
    >>> train_ds, test_ds = tfprune.datasets.fashion_mnist(batch_size=128)  # doctest: +SKIP
    >>> (x_train, y_train), _ = tfprune.datasets.fashion_mnist(  # doctest: +SKIP
    ...     image_size=32, channels=3, train_size=500, as_numpy=True
    ... )
    """
    caller = "fashion_mnist"
    _check_common_arguments(caller, image_size, batch_size, seed)
    _check_positive_int(caller, "channels", channels)
    for name, value in (("train_size", train_size), ("test_size", test_size)):
        if value is not None:
            _check_positive_int(caller, name, value)
            if value < 10:
                raise ValueError(
                    f"`fashion_mnist` expects `{name}` to be None or at least 10 (one image "
                    f"per class); received {name}={value!r}."
                )
    if not isinstance(download, bool):
        raise ValueError(
            f"`fashion_mnist` expects `download` to be True or False; received download={download!r}."
        )

    (train, test), source = _find_fashion_mnist(path, download)
    arrays = []
    for (images, labels), size, name in (
        (train, train_size, "train_size"),
        (test, test_size, "test_size"),
    ):
        keep = _stratified_subset(labels, size, seed, name)
        arrays.append((images[keep], labels[keep].astype("int32")))
    (train_images, train_labels), (test_images, test_labels) = arrays
    info = DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        input_shape=(image_size, image_size, channels),
        train_size=len(train_labels),
        test_size=len(test_labels),
        source=source,
    )
    if as_numpy:
        return Splits(
            (_scale_and_resize(train_images, image_size, channels), train_labels),
            (_scale_and_resize(test_images, image_size, channels), test_labels),
            info,
        )

    def preprocess(images, labels):
        # The tf.data form of _scale_and_resize, run per batch so that the
        # 60,000 images stay uint8 28x28 in memory whatever image_size is.
        images = tf.cast(images, "float32")[..., tf.newaxis] / 255.0
        if image_size != _FASHION_MNIST_IMAGE_SIZE:
            images = tf.image.resize(images, (image_size, image_size), method="bilinear")
        if channels > 1:
            images = tf.repeat(images, channels, axis=-1)
        return images, labels

    def finish(dataset):
        dataset = dataset.batch(batch_size).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    train_ds = tf.data.Dataset.from_tensor_slices((train_images, train_labels))
    if shuffle:
        train_ds = train_ds.shuffle(len(train_labels), seed=seed, reshuffle_each_iteration=True)
    test_ds = tf.data.Dataset.from_tensor_slices((test_images, test_labels))
    return Splits(finish(train_ds), finish(test_ds), info)


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
    tfds = require(f"Loading {name} (tensorflow-datasets)", "tensorflow_datasets", "tensorflow")

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


def _find_fashion_mnist(path, download):
    """The uint8 `((train_images, train_labels), (test_images, test_labels))` and their source."""
    if path is not None:
        candidates, explicit = [("path=", os.path.expanduser(os.fspath(path)))], True
    elif os.environ.get(FASHION_MNIST_ENVIRONMENT_VARIABLE):
        directory = os.path.expanduser(os.environ[FASHION_MNIST_ENVIRONMENT_VARIABLE])
        candidates, explicit = [(f"${FASHION_MNIST_ENVIRONMENT_VARIABLE}=", directory)], True
    else:
        candidates = [("Keras's cache ", directory) for directory in _keras_cache_directories()]
        candidates.append(("the Debian package's directory ", _DEBIAN_FASHION_MNIST_DIRECTORY))
        explicit = False
    looked_in = []
    for label, directory in candidates:
        files, missing = _fashion_mnist_files(directory)
        if not missing:
            splits = tuple(_read_fashion_mnist_split(*files[split]) for split in ("train", "test"))
            return splits, directory
        if not os.path.isdir(directory):
            looked_in.append(f"{label}'{directory}' (no such directory)")
        else:
            looked_in.append(f"{label}'{directory}' (lacks {', '.join(missing)})")
    if download and not explicit:
        try:
            splits = _download_fashion_mnist()
        except Exception as error:  # whatever the network or Keras raised, reported in one sentence
            raise DatasetNotAvailableError(
                _fashion_mnist_not_found(
                    looked_in, f"the download through keras.datasets failed ({error})"
                )
            ) from error
        source = "keras.datasets.fashion_mnist.load_data()"
        return tuple(_check_fashion_mnist_split(*split, source, source) for split in splits), source
    reason = "no other place is searched when one is named" if explicit else "download=False"
    raise DatasetNotAvailableError(_fashion_mnist_not_found(looked_in, reason))


def _fashion_mnist_not_found(looked_in, reason):
    return (
        f"Fashion-MNIST was not found in {'; '.join(looked_in)}, and {reason}: install Debian's "
        "package `dataset-fashion-mnist` with `make fashion-mnist` (or `sudo apt-get install "
        "dataset-fashion-mnist`), or pass path= (or set "
        f"${FASHION_MNIST_ENVIRONMENT_VARIABLE}) to a directory holding "
        "train-images-idx3-ubyte.gz and the three other IDX files, or pass download=True where "
        "a network is available (Keras then caches them, and later calls read that cache)."
    )


def _download_fashion_mnist():
    # The only place fashion_mnist reaches the network; tests replace it.
    return keras.datasets.fashion_mnist.load_data()
