"""argparse `type=` functions for option values that a bare int/float lets through.

Why: `type=int` accepts `--port 99999` and `-1`, which then fail deep inside socket.bind()
with an OverflowError traceback; `type=float` accepts `nan` and `inf`, which no deadline
arithmetic can use. These functions check the value where it is parsed and raise
argparse.ArgumentTypeError, so the user gets argparse's own one line
(`ubdsim serve: error: argument --port: ...`) and exit status 2 (USAGE), never a traceback.

Each message names what is accepted and echoes what was given. Any command may reuse them.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

PORT_MAX = 65535     # a TCP port is 16 bits; 0 asks the kernel for a free one


def _integer(text: str) -> int | None:
    """`text` as a base-10 integer, or None (no hex, no floats: `--port 1e3` is a typo)."""
    try:
        return int(text, 10)
    except ValueError:
        return None


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """A type function accepting the integers low..high (no upper end when high is None)."""
    wanted = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"

    def parse(text: str) -> int:
        value = _integer(text)
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, not {text!r}")
        return value

    parse.__name__ = f"int_range({low}, {high})"
    return parse


port = int_range(0, PORT_MAX)
"""A TCP port to listen on: 0..65535 (0: the kernel picks a free port)."""


def positive_seconds(text: str) -> float:
    """A duration in seconds: a finite number > 0.

    nan compares false with everything (a deadline in nan never expires, and select() refuses
    it); inf is refused as well rather than read as "no limit", so a typo cannot turn a
    safety timeout off. A long run takes a large finite value (1e9 s is 31 years).
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds greater than 0, not {text!r}")
    return value
