"""`ubdsim repair`: the narrow repairs for what `check` found, crash-safe, then check again.

Every repair is planned first (ubdsim/doctor/repairs.py: edits and a sentence each), then
applied to a copy of the file that replaces it only once complete and fsynced
(fileio.rewrite_beside): a kill at any step leaves the untouched original or the repaired
file. A finding with no safe repair is listed as not repaired, with the reason, and its
severity still counts in the exit status: nothing is hidden. `--dry-run` plans and checks
without writing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..cow.image import CowImage
from ..doctor.findings import WARNING
from ..doctor.repairs import CONFIRM, PLANNERS, Repair
from ..fileio import pwrite_all, rewrite_beside, shown
from ..fileio.steps import Fault, FaultSteps
from ..profiles import Profile
from .check import CheckReport, check
from .locks import refuse_if_locked



@dataclass(frozen=True)
class RepairResult:
    """What repair did (`ubdsim repair --json`)."""

    path: str
    dry_run: bool
    repaired: list[dict]                      # action, finding, text, bytes_changed, caveats
    not_repaired: list[dict] = field(default_factory=list)   # finding, severity, reason
    before: CheckReport | None = None
    after: CheckReport | None = None          # check of the result (of the plan, for --dry-run)

    @property
    def status(self) -> int:
        return (self.after or self.before).status

    def as_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


def _plan(path: str, report: CheckReport, confirmed: set[str]) -> tuple[list[Repair], list[dict]]:
    repairs: list[Repair] = []
    skipped: list[dict] = []
    with CowImage.open(path) as image:
        for finding in report.findings:
            if finding.repair is None:
                if finding.severity != WARNING:
                    skipped.append({"finding": finding.id, "severity": finding.severity,
                                    "reason": "no safe repair: see check's explanation"})
                continue
            if finding.repair in CONFIRM and finding.repair not in confirmed:
                skipped.append({"finding": finding.id, "severity": finding.severity,
                                "reason": f"needs your confirmation: --{finding.repair}"})
                continue
            repairs.append(PLANNERS[finding.repair](image, finding))
    return repairs, skipped


def repair(path: str, *, backing: str | None = None, profile: Profile | None = None,
           dry_run: bool = False, confirmed: frozenset[str] = frozenset(),
           fault: Fault | None = None) -> RepairResult:
    """Repair the COW file `path`; `confirmed` names the repairs the user asked for by name."""
    before = check(path, backing=backing, profile=profile)
    repairs, skipped = _plan(path, before, set(confirmed))
    if repairs and not dry_run:
        refuse_if_locked(path, shown(path))    # check() let a reader's lock pass
        step = FaultSteps(fault)
        with rewrite_beside(path, step) as fd:
            for fix in repairs:
                for edit in fix.edits:
                    step()
                    pwrite_all(fd, edit.data, edit.offset)
    after = check(path, backing=backing, profile=profile) if repairs and not dry_run else None
    done = [{"action": r.action, "finding": r.finding, "text": r.text,
             "bytes_changed": r.bytes_changed, "caveats": r.caveats} for r in repairs]
    return RepairResult(path=path, dry_run=dry_run, repaired=done, not_repaired=skipped,
                        before=before, after=after)


__all__ = ["RepairResult", "repair"]
