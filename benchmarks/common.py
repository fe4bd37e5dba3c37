"""Helpers shared by the benchmark scripts."""

import pathlib

RESULTS = pathlib.Path(__file__).resolve().parent / "RESULTS.md"


def write_section(section, text):
    """Replaces the `section` ("## Title") of RESULTS.md with `text`, leaving the others alone.

    Args:
        section: String. The section's heading line, e.g. `"## Export (LiteRT)"`.
        text: String. The whole new section, starting with that heading.
    """
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = existing.find(section + "\n")
    if start < 0:
        updated = existing.rstrip("\n") + "\n\n" + text
    else:
        end = existing.find("\n## ", start + len(section))
        rest = "" if end < 0 else existing[end + 1 :]
        updated = existing[:start] + text + ("\n" + rest if rest else "")
    RESULTS.write_text(updated)
