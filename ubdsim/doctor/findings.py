"""A finding of `ubdsim check`, its severities, and the exit codes they lead to (as qemu-img's).

qemu-img check: 0 no errors, 1 the check could not run, 2 corruption, 3 only leaks (harmless
inconsistencies, e.g. allocated space nothing refers to), 63 a format it cannot check. The
same split here: a *corruption* changes (or stops) what a guest sees; a *leak* is data or bits
no reader will ever use; a *warning* is worth knowing (a quirk, a hazard, a profile that would
refuse) without being damage.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CORRUPTION = "corruption"
LEAK = "leak"
WARNING = "warning"
SEVERITIES = (CORRUPTION, LEAK, WARNING)

EXIT_CLEAN = 0
EXIT_FAILED = 1
EXIT_CORRUPT = 2
EXIT_LEAKS = 3
EXIT_NOT_CHECKED = 63


@dataclass(frozen=True)
class Finding:
    """One thing check found. `sectors` are (first, count) runs; `byte_ranges` are
    (file offset, length) in the COW file."""

    id: str
    severity: str
    text: str
    sectors: list[tuple[int, int]] = field(default_factory=list)
    byte_ranges: list[tuple[int, int]] = field(default_factory=list)
    repair: str | None = None    # the `ubdsim repair` action that fixes it, if there is one

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")


def exit_status(findings: list[Finding]) -> int:
    """qemu-img check's rule: any corruption → 2; else any leak → 3; else 0."""
    severities = {f.severity for f in findings}
    if CORRUPTION in severities:
        return EXIT_CORRUPT
    if LEAK in severities:
        return EXIT_LEAKS
    return EXIT_CLEAN


def sector_count(runs: list[tuple[int, int]]) -> int:
    return sum(count for _, count in runs)


def describe_runs(runs: list[tuple[int, int]], limit: int = 4) -> str:
    """'sectors 8-15, 40' (the first `limit` runs, then how many more)."""
    parts = [f"{s}" if n == 1 else f"{s}-{s + n - 1}" for s, n in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"and {len(runs) - limit} more runs")
    return ", ".join(parts)


__all__ = ["CORRUPTION", "LEAK", "WARNING", "SEVERITIES", "EXIT_CLEAN", "EXIT_FAILED",
           "EXIT_CORRUPT", "EXIT_LEAKS", "EXIT_NOT_CHECKED", "Finding", "exit_status",
           "sector_count", "describe_runs"]
