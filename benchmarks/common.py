"""Helpers shared by the benchmark scripts."""

import os
import pathlib
import platform
import shlex
import sys

RESULTS = pathlib.Path(__file__).resolve().parent / "RESULTS.md"
# The smoke test (tests/test_benchmarks_smoke.py) points this at a temporary
# file so that quick runs never overwrite the real results.
RESULTS_VARIABLE = "TFPRUNE_BENCH_RESULTS"


def results_path():
    """Returns the results file: `$TFPRUNE_BENCH_RESULTS` if set, else `benchmarks/RESULTS.md`.

    Returns:
        A `pathlib.Path`.

    Example:

    >>> results_path().name  # doctest: +SKIP
    'RESULTS.md'
    """
    return pathlib.Path(os.environ.get(RESULTS_VARIABLE) or RESULTS)


def command_line(module, argv=None):
    """Returns the shell command that reruns a benchmark module with its arguments.

    Args:
        module: String. The module name, e.g. `"benchmarks.sparse_deploy"`.
        argv: List of strings or None. The arguments; `None` for `sys.argv[1:]`.

    Returns:
        String such as `".venv/bin/python -m benchmarks.sparse_deploy --quick"`.

    Example:

    >>> command_line("benchmarks.sparse_deploy", ["--quick"])
    '.venv/bin/python -m benchmarks.sparse_deploy --quick'
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    return shlex.join([".venv/bin/python", "-m", module, *arguments])


def machine():
    """Returns a one-line description of the machine: CPU, core count and load.

    Returns:
        String such as `"x86_64, 2 cores, load average 5.3"`.

    Example:

    >>> "cores" in machine()
    True
    """
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores{load}"


def write_section(section, text, first=False):
    """Replaces the `section` ("## Title") of RESULTS.md with `text`, leaving the others alone.

    Args:
        section: String. The section's heading line, e.g. `"## Export (LiteRT)"`.
        text: String. The whole new section, starting with that heading.
        first: Bool. Where a new section goes: right after the file's title
            if True, else at the end. An existing section stays where it is.

    The file is `results_path()`: `$TFPRUNE_BENCH_RESULTS` if set.
    """
    results = results_path()
    existing = results.read_text() if results.exists() else "# Benchmark results\n\n"
    start = existing.find(section + "\n")
    if start < 0 and first:
        title_end = existing.find("\n") + 1 if existing.startswith("# ") else 0
        updated = existing[:title_end] + "\n" + text.rstrip("\n") + "\n\n" + existing[title_end:].lstrip("\n")
    elif start < 0:
        updated = existing.rstrip("\n") + "\n\n" + text
    else:
        end = existing.find("\n## ", start + len(section))
        rest = "" if end < 0 else existing[end + 1 :]
        updated = existing[:start] + text + ("\n" + rest if rest else "")
    results.write_text(updated)


# The image data sets the benchmarks train on: scikit-learn's bundled digits (1,797 8x8 images,
# upscaled; offline everywhere) and Fashion-MNIST (70,000 28x28 images; `make fashion-mnist`).
DATA_SETS = ("digits", "fashion-mnist")
DATA_TITLES = {"digits": "digits", "fashion-mnist": "Fashion-MNIST"}


def image_data(data, image_size, batch_size=64, seed=0, train_size=None, as_numpy=False):
    """Loads one of `DATA_SETS` as the benchmarks use it: RGB images, integer labels.

    Args:
        data: String, "digits" or "fashion-mnist".
        image_size: Int. Height and width the images are resized to.
        batch_size: Int. Batch size of the `tf.data` form.
        seed: Int. Shuffling (and Fashion-MNIST's subset) seed.
        train_size: Int or None. Fashion-MNIST only: a stratified subset of its 60,000
            training images (None: all of them).
        as_numpy: Bool. NumPy arrays instead of batched `tf.data.Dataset`s.

    Returns:
        `(train, test)` like `tfprune.datasets.digits` returns it.

    Raises:
        ValueError: `data` is not one of `DATA_SETS`, or `train_size` is given for digits.

    Example:

    >>> (x, y), _ = image_data("digits", 8, as_numpy=True)  # doctest: +SKIP
    >>> x.shape[1:]  # doctest: +SKIP
    (8, 8, 3)
    """
    import tfprune

    if data not in DATA_SETS:
        raise ValueError(f"Unknown data set: data={data!r}; use one of {', '.join(DATA_SETS)}.")
    arguments = dict(image_size=image_size, channels=3, batch_size=batch_size, seed=seed, as_numpy=as_numpy)
    if data == "digits":
        if train_size is not None:
            raise ValueError(f"train_size={train_size} applies to fashion-mnist only; digits has 1,437 training images.")
        return tfprune.datasets.digits(**arguments)
    return tfprune.datasets.fashion_mnist(train_size=train_size, **arguments)
