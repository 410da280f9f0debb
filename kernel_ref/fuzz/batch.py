"""Judging many programs two at a time, each in a directory of its own.

Why two: the machine this runs on has 2 cores and a linux.uml boot keeps one busy, as
kernel_ref/run.py's PARALLEL says. Each program gets its own root (its sides run one after
the other in root/work, see execute.py), so two programs never share a path.
"""
from __future__ import annotations

import itertools
import re
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

from ..run import PARALLEL
from .execute import Judgement, Side, judge
from .program import Program


def safe_name(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "program"


class Pool:
    """A thread pool judging programs on (first, second) in private directories."""

    def __init__(self, first: Side, second: Side, keep: Path | None = None,
                 workers: int = PARALLEL):
        self.first, self.second = first, second
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="kernel_ref-fuzz-"))
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self.runs = 0                      # judgements made (one = one run of each side)

    def submit(self, program: Program, keep_as: str | None = None,
               sides: tuple[Side, Side] | None = None) -> Future:
        """Judge `program` on the pool's sides (or on `sides`: the shrinker compares
        linux.uml with itself to tell kernel nondeterminism from a ubdsim gap)."""
        with self._lock:
            number = next(self._ids)
        return self._pool.submit(self._one, program, number, keep_as,
                                 sides or (self.first, self.second))

    def _one(self, program: Program, number: int, keep_as: str | None,
             sides: tuple[Side, Side]) -> Judgement:
        root = self.root / f"p{number:05d}"
        root.mkdir()
        keep = self.keep / safe_name(keep_as) if self.keep is not None and keep_as else None
        try:
            result = judge(program, root, sides[0], sides[1], keep)
            if keep is not None:
                (keep / "program.json").write_text(program.dumps() + "\n")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        with self._lock:
            self.runs += 1
        return result

    def map(self, programs: Iterable[Program]) -> Iterator[Judgement]:
        """Judgements in the order of `programs` (all submitted at once)."""
        futures = [self.submit(p) for p in programs]
        for future in futures:
            yield future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
