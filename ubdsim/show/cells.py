"""Runs onto a fixed number of cells (terminal characters or pixel columns).

Cell i of n over `total` units covers [floor(i*total/n), floor((i+1)*total/n)): every unit
is in exactly one cell and no cell is empty while n <= total. A cell shows the
highest-ranked key among the runs that touch it, so a single written sector in a 1 TiB disk
still colours one cell: for looking, "something is here" beats "most of it is backing".
The work is O(runs + cells), whatever `total` is.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell_of(unit: int, total: int, n: int) -> int:
    """The cell that unit `unit` falls in: the largest i with floor(i*total/n) <= unit."""
    return ((unit + 1) * n - 1) // total


def boundary(i: int, total: int, n: int) -> int:
    """Where cell i starts (cell n: `total`)."""
    return i * total // n


def cells(runs: Iterable[tuple[str, int, int]], total: int, n: int,
          order: Sequence[str]) -> list[str | None]:
    """The key each of n cells shows: runs are (key, start, end) in units of [0, total);
    keys earlier in `order` win; a cell no run touches is None."""
    if total <= 0 or n <= 0:
        return []
    rank = {key: i for i, key in enumerate(order)}
    best: list[int | None] = [None] * n
    for key, start, end in runs:
        start, end = max(0, start), min(total, end)
        if end <= start:
            continue
        r = rank[key]
        for i in range(cell_of(start, total, n), cell_of(end - 1, total, n) + 1):
            if best[i] is None or r < best[i]:
                best[i] = r
    return [None if r is None else order[r] for r in best]


def groups(shown: Sequence[str | None]) -> list[tuple[str, int, int]]:
    """Consecutive equal cells as (key, first cell, cell past the last); None cells left out."""
    out: list[tuple[str, int, int]] = []
    for i, key in enumerate(shown):
        if key is None:
            continue
        if out and out[-1][0] == key and out[-1][2] == i:
            out[-1] = (key, out[-1][1], i + 1)
        else:
            out.append((key, i, i + 1))
    return out


__all__ = ["boundary", "cell_of", "cells", "groups"]
