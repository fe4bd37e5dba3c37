"""Runs every benchmark script in this directory, one process each.

Usage: `make bench` (or `.venv/bin/python -m benchmarks.run_all [--quick] [NAME ...]`).
Each script writes its own section of `benchmarks/RESULTS.md` with the command
that produced it. Scripts run in separate processes so that their TensorFlow
state and timings do not interfere.
"""

import argparse
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent


def scripts():
    """Returns the benchmark script names (modules with a `main`), sorted."""
    return sorted(
        path.stem
        for path in HERE.glob("*.py")
        if path.stem not in ("__init__", "run_all", "common") and "def main(" in path.read_text()
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (what CI runs)")
    args = parser.parse_args(argv)
    names = args.names or scripts()
    failures = []
    for name in names:
        command = [sys.executable, "-m", f"benchmarks.{name}"] + (["--quick"] if args.quick else [])
        print("$", " ".join(command), flush=True)
        if subprocess.run(command, cwd=HERE.parent).returncode != 0:
            failures.append(name)
    if failures:
        print("failed:", ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
