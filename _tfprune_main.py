"""The `tfprune` command's entry point, outside the package so that Ctrl-C is caught even during imports.

Importing `tfprune` loads Keras and TensorFlow, which takes seconds; an
interrupt then would otherwise end in a traceback from wherever the import
was. This module imports nothing heavy until `main` runs inside its handler.
"""

import sys

# tfprune.cli.INTERRUPTED (a test checks they agree): this module cannot import tfprune before its handler.
INTERRUPTED = 130


def main(argv=None):
    """Runs `tfprune.cli.main`; Ctrl-C at any point prints one line and returns 130.

    Args:
        argv: Optional list of strings. The arguments after the program name;
            defaults to `sys.argv[1:]`.

    Returns:
        Int. `tfprune.cli.main`'s exit code, or 130 when interrupted.

    Example:

    >>> import _tfprune_main
    >>> _tfprune_main.main(["report", "missing.keras"])  # doctest: +SKIP
    2
    """
    try:
        from tfprune.cli import main as run

        return run(argv)
    except KeyboardInterrupt:
        if "--traceback" in (sys.argv[1:] if argv is None else argv):
            raise
        print("tfprune: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
