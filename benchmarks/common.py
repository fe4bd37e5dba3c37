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
