"""Fashion-MNIST's IDX files: where Keras caches them, and reading and checking them.

`tfprune.datasets.fashion_mnist` looks for the four files (gzipped or not) in
the directories it is given; `read_split` reads one split with `read_idx`
(the IDX format: a magic number giving the element type and the rank, the
sizes, then the data, big-endian) and refuses a file that does not hold
Fashion-MNIST's uint8 28x28 images or labels 0..9.
"""

import gzip
import os
import zlib

import numpy as np

_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_MNIST_IMAGE_SIZE = 28


def _keras_cache_directories():
    # Where keras.utils.get_file puts `cache_subdir="datasets/fashion-mnist"`:
    # $KERAS_HOME or ~/.keras, or /tmp/.keras when that is not writable.
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    directories = [home]
    if not os.access(home, os.W_OK):
        directories.append(os.path.join("/tmp", ".keras"))
    return [os.path.join(directory, "datasets", "fashion-mnist") for directory in directories]


def _fashion_mnist_files(directory):
    """`{split: (images_file, labels_file)}` found in `directory`, and the names it lacks."""
    files, missing = {}, []
    for split, names in _FASHION_MNIST_FILES.items():
        found = []
        for name in names:
            for candidate in (name, name + ".gz"):
                if os.path.isfile(os.path.join(directory, candidate)):
                    found.append(os.path.join(directory, candidate))
                    break
            else:
                missing.append(name + "[.gz]")
        files[split] = tuple(found)
    return files, missing


def _read_fashion_mnist_split(images_path, labels_path):
    return _check_fashion_mnist_split(
        _read_idx(images_path), _read_idx(labels_path), images_path, labels_path
    )


def _check_fashion_mnist_split(images, labels, images_source, labels_source):
    size = _FASHION_MNIST_IMAGE_SIZE
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
        raise ValueError(
            f"`fashion_mnist` cannot use '{images_source}': it holds {images.dtype} data of shape "
            f"{images.shape}, not uint8 images of shape (count, {size}, {size}); {_REPLACE_THE_FILE}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"`fashion_mnist` cannot use '{labels_source}': it holds {labels.dtype} data of shape "
            f"{labels.shape}, not uint8 labels of shape (count,); {_REPLACE_THE_FILE}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"`fashion_mnist` cannot use '{labels_source}': it holds {len(labels)} labels for the "
            f"{len(images)} images of '{images_source}'; {_REPLACE_THE_FILE}"
        )
    if len(labels) and labels.max() > 9:
        raise ValueError(
            f"`fashion_mnist` cannot use '{labels_source}': it holds the label {labels.max()}, "
            f"outside Fashion-MNIST's 0..9; {_REPLACE_THE_FILE}"
        )
    return images, labels


_REPLACE_THE_FILE = (
    "replace it with a good copy (`make fashion-mnist` installs one, "
    "`sudo apt-get install --reinstall dataset-fashion-mnist` repairs that one)."
)

# IDX type codes (the third byte of the magic number) and their big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_idx(path):
    """The array in an IDX file (LeCun's MNIST format), gzipped or not.

    The header is two zero bytes, a type code, the number of dimensions and
    one big-endian uint32 per dimension; the data follows, big-endian, and
    must fill exactly the product of the dimensions.
    """

    def refuse(reason):
        return ValueError(f"`fashion_mnist` cannot use '{path}': {reason}; {_REPLACE_THE_FILE}")

    with open(path, "rb") as file:
        data = file.read()
    if data[:2] == b"\x1f\x8b":  # gzip's magic number, whatever the file's name
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise refuse(f"it is a damaged gzip file ({error})") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise refuse(
            f"it does not start with an IDX magic number (00 00, a type code, a number of "
            f"dimensions) but with {data[:4].hex(' ') or 'nothing'}"
        )
    dtype, rank = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header_size = 4 + 4 * rank
    if len(data) < header_size:
        raise refuse(
            f"its header announces {rank} dimensions but the file ends after {len(data)} bytes"
        )
    shape = tuple(int(dimension) for dimension in np.frombuffer(data, ">u4", rank, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise refuse(
            f"its header announces shape {shape} ({expected} bytes of data) but it holds "
            f"{len(data) - header_size} bytes of data"
        )
    return (
        np.frombuffer(data, dtype, offset=header_size)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )
