"""A one-line progress bar on stderr, shown only when stderr is a terminal.

Pipes, logs and tests get no bar (and no carriage returns): `ubdsim moo ... 2>log` stays clean.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Call with (done, total, *detail); redraws at most every `interval` seconds (and always
    at the end). What follows the bar is `describe()`: MiB here; commands that count other
    things (guests, crash points) override it."""

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.interval = interval
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int, *detail: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < self.interval and done < total):
            return
        self._last = now
        width = 30
        filled = int(done / total * width) if total else width
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.describe(done, total, *detail)}")
        self.stream.flush()
        self._drawn = True

    def describe(self, done: int, total: int) -> str:
        fraction = done / total if total else 1.0
        return f"{fraction:6.1%}  {done >> 20} of {total >> 20} MiB"

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
