"""The `tf.data` pipelines of `tfprune.datasets`: subsets, scaling, augmentation, batching, checks."""

import keras
import numpy as np

from tfprune._optional import OptionalModule

# tf.data is TensorFlow's; imported when a dataset is built.
tf = OptionalModule("tensorflow", "The tf.data form of tfprune.datasets (as_numpy=False)")


def _stratified_subset(labels, size, seed, name):
    """Sorted indices of a class-stratified subsample of `size` labels (all if None)."""
    if size is None:
        return np.arange(len(labels))
    if size > len(labels):
        raise ValueError(
            f"`fashion_mnist` expects `{name}` to be at most {len(labels)}, the images in that "
            f"split; received {name}={size!r}."
        )
    if size == len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed
    )
    return np.sort(keep)


def _scale_and_resize(images, image_size, channels):
    """uint8 `(count, 28, 28)` images as float32 `(count, image_size, image_size, channels)` in [0, 1]."""
    images = images.astype("float32")[..., np.newaxis] / np.float32(255.0)
    if image_size != images.shape[1]:
        # keras.ops, not tf.image, so the NumPy form works on every backend; in
        # chunks, to bound the memory the backend's resize takes.
        images = np.concatenate(
            [
                keras.ops.convert_to_numpy(
                    keras.ops.image.resize(
                        chunk,
                        (image_size, image_size),
                        interpolation="bilinear",
                        data_format="channels_last",
                    )
                )
                for chunk in np.array_split(images, max(1, len(images) // 10_000))
            ]
        )
    if channels > 1:
        images = np.repeat(images, channels, axis=-1)
    return images


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
