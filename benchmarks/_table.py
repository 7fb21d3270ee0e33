"""The one table printer the benchmark scripts share."""

from __future__ import annotations

from collections.abc import Sequence


def print_table(
    rows: Sequence[Sequence[str]], *, gap_between_groups: bool = False
) -> None:
    """Print ``rows`` (the first is the header) as left-aligned columns.

    With ``gap_between_groups``, a blank line separates runs of rows whose
    first cell differs.
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        if gap_between_groups and i > 1 and row[0] != rows[i - 1][0]:
            print()
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
