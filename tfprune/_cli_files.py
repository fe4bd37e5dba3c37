"""What the `tfprune` command line checks about its files, and how it writes them.

`tfprune.cli` refuses bad input in one sentence (`UsageError`, exit code 2)
before any work is done: input files that are missing, directories or not
readable, outputs it could not write. This module holds those checks, the
argument types of its flags, and the blocks that report a failed write under
the output's name and keep LiteRT's `INFO:` lines off the terminal.
"""

import argparse
import contextlib
import os
import sys
import tempfile


class UsageError(Exception):
    """Bad input from the command line: reported in one sentence, exit code 2."""


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"rate must be a number in (0, 1); received {text!r}"
        ) from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"rate must be in (0, 1); received {text}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; received {text!r}")
    return value


def _check_input(path, suffix):
    if os.path.isdir(path):
        raise UsageError(f"Input '{path}' is a directory; pass a {suffix} file.")
    if not os.path.isfile(path):
        raise UsageError(f"Input file '{path}' does not exist.")
    if not path.endswith(suffix):
        raise UsageError(f"Input file '{path}' is not a {suffix} file; pass a {suffix} file.")
    if not os.access(path, os.R_OK):
        raise UsageError(f"Input file '{path}' cannot be read (permission denied).")


def _check_output(path, suffix, force):
    """Refuses an output the command could not write, before any work is done."""
    if not path.endswith(suffix):
        raise UsageError(f"Output '{path}' must end in {suffix}.")
    if os.path.isdir(path):
        raise UsageError(f"Output '{path}' is a directory; pass a file name ending in {suffix}.")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"Output directory '{directory}' does not exist; create it first.")
    if os.path.exists(path) and not force:
        raise UsageError(f"Output '{path}' already exists; pass --force to overwrite it.")
    name_limit = _name_limit(directory)
    if len(os.fsencode(os.path.basename(path))) > name_limit:
        raise UsageError(
            f"Output file name '{os.path.basename(path)[:40]}...' is "
            f"{len(os.path.basename(path))} characters long; this file system allows {name_limit}."
        )
    # Try for real: permission bits do not tell about read-only file systems or root.
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise UsageError(
            f"Cannot write to output directory '{directory}': {error.strerror}."
        ) from None


def _name_limit(directory):
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # not every platform reports it
        return 255


@contextlib.contextmanager
def _writing(path):
    """Reports a failed write under the output's name, not the private temporary file's."""
    try:
        yield
    except OSError as error:
        raise UsageError(f"Cannot write output '{path}': {error.strerror or error}.") from None


@contextlib.contextmanager
def _without_litert_info():
    """Keeps the LiteRT interpreter's `INFO:` lines (written by C++ to fd 2) off the terminal.

    Everything else written to stderr meanwhile is passed on once the block ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not line.startswith("INFO: "):
                    print(line, file=sys.stderr)
