"""`ubdsim check`: every finding about one COW file, with qemu-img check's exit codes.

The findings' rules live in the image doctor (ubdsim/doctor/); this operation runs them.

The order of the work: refuse what cannot be checked (not a disk file, not a COW file, a
file a running kernel holds unless the caller shares it), then the header alone, then the
bitmap against the data area, then the backing file. A header that cannot be read at all
is itself the finding (the file claims to be a COW file by its magic).

`check_chain()` (`check --chain`, ubdsim's own: UML cannot stack) checks every COW layer of a
backing chain down to its raw bottom, each against the file below it, plus the chain's own
findings (a loop, a missing or unusable layer, a chain too deep); its exit code is the
worst layer's.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from ..cow.header import has_magic, read_header
from ..cow.image import CowImage, header_geometry, read_fully
from ..cow.layouts import HEADER_READ_SIZE
from ..errors import CowFormatError, LockedError
from ..fileio import open_disk_file, shown
from .locks import holder_pid
from ..profiles import Profile
from ..doctor import data_checks
from ..doctor.backing_checks import backing_findings
from ..doctor.findings import (CORRUPTION, EXIT_CLEAN, EXIT_CORRUPT, EXIT_LEAKS, EXIT_NOT_CHECKED,
                               LEAK, WARNING, Finding, exit_status)
from .chain import walk_chain
from ..doctor.header_checks import header_findings, rounding_bug_findings


@dataclass(frozen=True)
class CheckReport:
    """What check found (`ubdsim check --json`)."""

    path: str
    format: str                   # "cow", or "raw" (no COW magic: nothing to check, exit 63)
    version: int | None
    profile: str | None           # the profile findings were judged for (None: all)
    sectors: int | None
    marked_sectors: int | None
    backing: str | None
    findings: list[Finding]
    corruptions: int
    leaks: int
    warnings: int
    status: int                   # the exit code: 0 clean, 2 corruption, 3 leaks only, 63 raw

    def as_dict(self) -> dict:
        return asdict(self)


def _report(path: str, fmt: str, findings: list[Finding], status: int, **values) -> CheckReport:
    count = {s: sum(f.severity == s for f in findings) for s in (CORRUPTION, LEAK, WARNING)}
    defaults = dict(version=None, profile=None, sectors=None, marked_sectors=None, backing=None)
    defaults.update(values)
    return CheckReport(path=path, format=fmt, findings=findings, corruptions=count[CORRUPTION],
                       leaks=count[LEAK], warnings=count[WARNING], status=status, **defaults)


def check(path: str, *, backing: str | None = None, profile: Profile | None = None,
          force_share: bool = False, chain: bool = False) -> CheckReport:
    """Check the COW file `path` (`backing` overrides the header's backing path).
    `chain`: as one layer of a chain (check_chain()): a COW backing file is no warning."""
    fd = open_disk_file(path, os.O_RDONLY, "COW file")
    try:
        st = os.fstat(fd)
        raw = read_fully(fd, min(HEADER_READ_SIZE, st.st_size), 0)
        if not has_magic(raw):
            return _report(path, "raw", [], EXIT_NOT_CHECKED)
        findings: list[Finding] = []
        pid = holder_pid(fd, exclusive=False)
        if pid is not None and not force_share:
            raise LockedError(f"'{shown(path)}' is locked by process {pid} (a running UML kernel?): "
                              "its contents are changing; use -U to check it anyway", args=(pid,))
        if pid is not None:
            findings.append(Finding("file.in_use", WARNING, (
                f"process {pid} holds the file locked (ubd_kern.c open_ubd_file() [6.1] locks "
                "what a running guest uses): what was checked may already have changed")))
    finally:
        os.close(fd)
    try:
        header = read_header(raw)
    except CowFormatError as err:
        findings.append(Finding("header.unreadable", CORRUPTION, (
            f"the file has the COW magic but its header cannot be read ({err}): a kernel given a "
            "backing file fails the open (`Failed to read COW header`), one given the file alone "
            "uses it raw and the guest's writes destroy what is left")))
        return _report(path, "cow", findings, exit_status(findings))
    findings += header_findings(raw, header, profile)
    backing_path = backing if backing is not None else header.backing_path
    try:
        geometry = header_geometry(header)
    except CowFormatError:
        geometry = None          # header_findings() already named the field
    if geometry is None:
        status, more = backing_findings(None, header, st, backing_path, profile, chain=chain)
        findings += more
        return _report(path, "cow", findings, exit_status(findings), version=header.version,
                       profile=profile.name if profile else None, backing=backing_path)
    with CowImage.open(path) as image:
        marked = list(image.marked_runs())
        status, more = backing_findings(image, header, st, backing_path, profile, chain=chain)
        grown_from = None
        if status.size is not None and image.grown_over(status.size):
            grown_from = -(-status.size // geometry.sectorsize)
        if geometry.rounding_bug:
            slack, slack_range = image.bits_after_bitmap()
            findings += rounding_bug_findings(header, geometry.sectors, geometry.bitmap_len,
                                              slack, slack_range)
        for finding in (data_checks.switched_over_old_version(image),
                        data_checks.short_file(image, marked),
                        data_checks.bits_past_end(image),
                        data_checks.orphan_data(image, marked),
                        data_checks.marked_holes(image, marked, grown_from)):
            if finding is not None:
                findings.append(finding)
        findings += more
        return _report(path, "cow", findings, exit_status(findings), version=header.version,
                       profile=profile.name if profile else None, sectors=geometry.sectors,
                       marked_sectors=sum(n for _, n in marked), backing=backing_path)


@dataclass(frozen=True)
class ChainCheckReport:
    """`ubdsim check --chain`: each COW layer's report, the chain's findings, the worst code."""

    path: str
    layers: list[CheckReport]          # the COW layers, top first
    bottom: str | None                 # the raw bottom (None: the chain ends before one)
    findings: list[Finding]            # the chain's own: chain.loop, chain.missing, ...
    status: int                        # the worst of the layers' and the chain's codes
    chain: dict = field(default_factory=dict)   # walk_chain()'s answer

    def as_dict(self) -> dict:
        return asdict(self)


# qemu-img check's codes from the worst down (63, "not checked", is no damage).
_WORST_FIRST = (EXIT_CORRUPT, EXIT_LEAKS, EXIT_CLEAN, EXIT_NOT_CHECKED)


def _worst(codes: list[int]) -> int:
    for code in _WORST_FIRST:
        if code in codes:
            return code
    return EXIT_CLEAN


def check_chain(path: str, *, profile: Profile | None = None,
                force_share: bool = False) -> ChainCheckReport:
    """Check `path` and every COW layer under it (`check --chain`)."""
    walked = walk_chain(path)
    layers = walked.layers
    if not layers or not layers[0].is_cow:
        top = check(path, profile=profile, force_share=force_share)   # raw, or refused
        return ChainCheckReport(path=path, layers=[top], bottom=None, findings=[],
                                status=top.status, chain=walked.as_dict())
    reports = []
    for layer in layers:
        if not layer.is_cow:
            break
        reports.append(check(layer.path, profile=profile, force_share=force_share, chain=True))
    found: list[Finding] = []
    last = layers[-1]
    if walked.loop:
        found.append(Finding("chain.loop", CORRUPTION, (
            f"{walked.problem}: no chain can be read through it (the kernel reads a backing "
            "file raw and never follows one; ubdsim --chain refuses it)")))
    elif walked.missing:
        found.append(Finding("chain.missing", CORRUPTION, (
            f"{walked.problem}: the chain has no bottom, ubdsim --chain refuses it")))
    elif walked.unusable or walked.depth_exceeded:
        found.append(Finding("chain.unusable", CORRUPTION, (
            f"{walked.problem}: ubdsim --chain refuses it")))
    elif last.header_error is not None:
        found.append(Finding("chain.unreadable_layer", CORRUPTION, (
            f"'{shown(last.path)}' has the COW magic but its header cannot be read "
            f"({last.header_error}): the chain cannot go on through it, ubdsim --chain "
            "refuses it")))
    status = _worst([r.status for r in reports] + [exit_status(found)])
    bottom = last.path if walked.complete and not last.is_cow and last.header_error is None else None
    return ChainCheckReport(path=path, layers=reports, bottom=bottom, findings=found,
                            status=status, chain=walked.as_dict())


__all__ = ["ChainCheckReport", "CheckReport", "check", "check_chain"]
