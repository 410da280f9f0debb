"""Numbered mutating steps, so a test can kill a writer before each one.

Every crash-safe writer (the 2.4 resize, rebase's journal, repair's rewrite) promises that a
kill at any moment leaves the old file or the new one. The promise is tested by killing the
process before step n for every n: the writer calls its `FaultSteps` before each mutation,
and the test's fault hook SIGKILLs the process when the count reaches n.
"""
from __future__ import annotations

from collections.abc import Callable

Fault = Callable[[int], None]


class FaultSteps:
    """Counts the mutating steps and calls the fault hook (if any) before each."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault, self.count = fault, 0

    def __call__(self) -> None:
        if self.fault is not None:
            self.fault(self.count)
        self.count += 1


__all__ = ["Fault", "FaultSteps"]
