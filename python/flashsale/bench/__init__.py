"""Benchmarks run by ``flashsale bench``: ``core`` (the C++ primitives against plain
Python) and ``ranking`` (rolling top-k over a month against the pandas reference)."""

from __future__ import annotations

from collections.abc import Sequence


def print_columns(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` (the first is the header) as aligned columns: the first left, the
    rest right, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
