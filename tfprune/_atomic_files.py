"""Writing output files atomically, and cleaning up what killed runs left (not public API).

Every file tfprune writes (`.keras` models, `.tflite` files, plots) is
written to a hidden temporary file beside the output and renamed at the end
(`atomic_path`), so a crash never leaves a half-written output.
"""

import contextlib
import os
import re
import shutil
import tempfile
import time

TEMPORARY_PREFIX = ".tfprune-"
# Exactly what `atomic_path` names: prefix, process id, tempfile's 8 random characters, the output's suffix.
_TEMPORARY_NAME = re.compile(r"\.tfprune-(\d+)-[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")
# A file younger than this is never removed: its writer may run on another host sharing the
# directory (an NFS mount, another container), where its process id means nothing here.
STALE_AFTER_SECONDS = 3600


def remove_stale_temporaries(directory):
    """Deletes the hidden temporary files that killed `tfprune` runs left in `directory`.

    `atomic_path` writes to `.tfprune-<process id>-<8 random characters><suffix>`
    beside the output and renames it at the end; a run killed outright
    (SIGKILL, power loss) cannot delete it. A file of exactly that form is
    removed when it is over an hour old and no process of its id runs on this
    machine; every other file (yours, a running `tfprune`'s, one that might be
    written from another host) is left alone. Nothing is removed on Windows.

    Args:
        directory: String or path-like. The directory to clean.

    Returns:
        List of the removed paths (strings).

    Raises:
        OSError: If `directory` cannot be listed.

    Example:

    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> path = os.path.join(directory, ".tfprune-999999999-abcd1234.keras")
    >>> open(path, "w").close()
    >>> os.utime(path, (0, 0))  # written long ago, by a process that is gone
    >>> [os.path.basename(p) for p in remove_stale_temporaries(directory)]
    ['.tfprune-999999999-abcd1234.keras']
    """
    removed = []
    for name in os.listdir(directory):
        match = _TEMPORARY_NAME.fullmatch(name)
        candidate = os.path.join(directory, name)
        if match is None or _process_runs(int(match.group(1))) or not os.path.isfile(candidate):
            continue
        try:
            if time.time() - os.path.getmtime(candidate) < STALE_AFTER_SECONDS:
                continue
            os.unlink(candidate)
            removed.append(candidate)
        except OSError:
            pass  # another run removed it first, or it is not ours to remove
    return removed


def _process_runs(pid):
    if os.name == "nt":  # os.kill would end the process there: never clean up on Windows
        return True
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its file
    return True


@contextlib.contextmanager
def atomic_path(path, overwrite=True):
    """Yields a temporary path beside `path`; moves it into place on success.

    The file at `path` is only replaced once the body finished without error,
    so a crash never leaves a half-written output or destroys an existing file.

    Args:
        path: String or path-like. The final destination.
        overwrite: Bool. If False and `path` exists, raises `FileExistsError`.

    Yields:
        String. A temporary file path in the same directory, with the same suffix.

    Raises:
        FileExistsError: If `path` exists and `overwrite` is False.
    """
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(
            f"Output file '{path}' already exists; choose another path or allow overwriting."
        )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    suffix = os.path.splitext(path)[1]
    # The writer's process id in the name tells a later run whether the file is still being written.
    handle, temporary = tempfile.mkstemp(
        prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-", suffix=suffix, dir=directory
    )
    os.close(handle)
    os.unlink(temporary)  # writers such as model.save() want to create the file themselves
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        # What the writer left behind on failure (a file, or a directory from a writer that made one).
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.unlink(temporary)
