"""SIGTERM and SIGHUP stop a command the way Ctrl-C does: its cleanup runs, nothing half-made stays.

Python turns SIGINT into KeyboardInterrupt, so every `finally` of a tool (a temporary file
removed, a journal kept consistent) runs on Ctrl-C; but the default action of SIGTERM (kill,
timeout, systemd) and SIGHUP (a closed terminal) ends the process at once and leaves a
temporary file as large as the image behind. Here both raise `Terminated`, a
KeyboardInterrupt that remembers its signal, so the same cleanup runs and the exit status
is the shell's 128+N. Commands that manage signals themselves (`run` forwards them to the
guest, `serve` and `vm` stop their servers) install their own handlers over these.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGHUP arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise(signum: int, _frame: object) -> None:
    raise Terminated(signum)


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise Terminated; the old handlers come back after."""
    previous = {signum: signal.signal(signum, _raise) for signum in HANDLED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


__all__ = ["HANDLED", "Terminated", "stop_signals_interrupt", "signal_name"]
