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

from ..cow.image import CowImage, read_header_file
from ..doctor.findings import WARNING
from ..doctor.repairs import CONFIRM, PLANNERS, Repair
from ..fileio import pwrite_all, rewrite_beside, same_file, shown
from ..fileio.steps import Fault, FaultSteps
from ..profiles import Profile
from .check import CheckReport, check
from .locks import refuse_if_locked
from .rebase import rebase

REBASE_FIXES = {"backing.mtime_mismatch"}   # what pointing the header at -b's file mends



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


def _plan(path: str, report: CheckReport, confirmed: set[str],
          rebased: bool) -> tuple[list[Repair], list[dict]]:
    repairs: list[Repair] = []
    skipped: list[dict] = []
    wanted = []
    for finding in report.findings:
        if rebased and finding.id in REBASE_FIXES:
            continue
        if finding.repair is None:
            if finding.severity != WARNING:
                skipped.append({"finding": finding.id, "severity": finding.severity,
                                "reason": "no safe repair: see check's explanation"})
        elif finding.repair in CONFIRM and finding.repair not in confirmed:
            skipped.append({"finding": finding.id, "severity": finding.severity,
                            "reason": f"needs your confirmation: --{finding.repair}"})
        else:
            wanted.append(finding)
    if wanted:                   # only a file whose geometry works has a planned repair
        with CowImage.open(path) as image:
            repairs = [PLANNERS[f.repair](image, f) for f in wanted]
    return repairs, skipped


def _needs_rebase(path: str, backing: str, report: CheckReport) -> bool:
    """-b names the backing file as it is now: point the header at it when the header names
    another file, or when it differs from the header by mtime (a copy without `cp -p`)."""
    header, _ = read_header_file(path)
    return (not same_file(header.backing_path, backing)
            or any(f.id in REBASE_FIXES for f in report.findings))


def _rebase(path: str, backing: str, trust_new: bool, dry_run: bool) -> dict:
    if dry_run:
        return {"action": "rebase", "finding": "backing", "bytes_changed": 0, "caveats": [],
                "text": f"point the header at '{shown(backing)}' (its path, size and mtime), "
                        "after rebase's content check"}
    result = rebase(path, backing, trust_new=trust_new)
    return {"action": "rebase", "finding": "backing", "bytes_changed": 0, "caveats": result.warnings,
            "text": f"the header now names '{shown(result.new_backing)}' (mtime {result.new_mtime}); "
                    f"content check: {result.check} ({result.compared_bytes} bytes compared)"}


def repair(path: str, *, backing: str | None = None, profile: Profile | None = None,
           dry_run: bool = False, confirmed: frozenset[str] = frozenset(),
           trust_new: bool = False, fault: Fault | None = None) -> RepairResult:
    """Repair the COW file `path`; `confirmed` names the repairs the user asked for by name.

    `backing` is the backing file as it is now (moved, or copied without `cp -p`): the check
    is made against it, and the header is pointed at it by `rebase` (safe mode: the content
    is compared with the old backing file; `trust_new` when that one is gone).
    """
    before = check(path, backing=backing, profile=profile)
    done: list[dict] = []
    rebased = backing is not None and before.format == "cow" and _needs_rebase(path, backing, before)
    if rebased:
        done.append(_rebase(path, backing, trust_new, dry_run))
    repairs, skipped = _plan(path, before, set(confirmed), rebased)
    if repairs and not dry_run:
        refuse_if_locked(path, shown(path))    # check() let a reader's lock pass
        step = FaultSteps(fault)
        with rewrite_beside(path, step) as fd:
            for fix in repairs:
                for edit in fix.edits:
                    step()
                    pwrite_all(fd, edit.data, edit.offset)
    done += [{"action": r.action, "finding": r.finding, "text": r.text,
              "bytes_changed": r.bytes_changed, "caveats": r.caveats} for r in repairs]
    after = check(path, backing=backing, profile=profile) if done and not dry_run else None
    return RepairResult(path=path, dry_run=dry_run, repaired=done, not_repaired=skipped,
                        before=before, after=after)


__all__ = ["RepairResult", "repair"]
