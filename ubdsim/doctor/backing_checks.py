"""Findings about the backing file a COW header names (or the one given with -b).

Both kernels refuse a backing file whose size or mtime differs from the header
(ubd_kern.c backing_file_mismatch()); 2.4 with the resize patch accepts a larger header size
when the grown tail is marked. Neither can stack: a backing file that is itself a COW file is
opened raw, so the guest sees its header and bitmap as disk sectors (ubdsim's own --chain
reads it as a chain instead).
"""
from __future__ import annotations

import os

from ..cow.header import CowHeader, probe
from ..cow.image import CowImage
from ..cow.layouts import MAGIC_AND_VERSION
from ..fileio import open_disk_file, shown
from ..ops.inspect import BackingStatus, backing_status
from ..profiles import Profile
from .findings import CORRUPTION, WARNING, Finding

_MOVED = ("if the file was only moved or copied without `cp -p`, `ubdsim rebase -b FILE COW` "
          "checks the content and rewrites the header")


def _is_cow_file(path: str) -> bool:
    try:
        fd = open_disk_file(path, os.O_RDONLY, "backing file")
    except OSError:
        return False
    try:
        return probe(os.pread(fd, MAGIC_AND_VERSION, 0)) is not None
    finally:
        os.close(fd)


def backing_findings(image: CowImage | None, header: CowHeader, cow_st: os.stat_result,
                     path: str, profile: Profile | None, *, chain: bool = False
                     ) -> tuple[BackingStatus, list[Finding]]:
    """The backing file's status and what is wrong with it (`path`: the header's or -b's).
    `chain` (check --chain): the backing file is checked as a layer of its own, so one that
    is a COW file is the chain's next layer, not a warning."""
    found: list[Finding] = []
    if not header.backing_path.startswith("/"):
        found.append(Finding("backing.relative_path", WARNING, (
            f"the header's backing path '{shown(header.backing_path)}' is relative: writers "
            "store it absolute (cow_user.c absolutize()), and a relative one is looked up from "
            "whatever directory UML was started in")))
    status = backing_status(header, path, cow_st)
    name = shown(path)
    if not status.present:
        found.append(Finding("backing.missing", CORRUPTION, (
            f"the backing file '{name}' cannot be opened ({status.error}): both kernels fail "
            f"the open and uml_moo refuses; {_MOVED}")))
        return status, found
    if status.error:
        fid = "backing.self" if "itself" in status.error else "backing.not_a_disk"
        found.append(Finding(fid, CORRUPTION, (
            f"the backing file '{name}' is {status.error}: a kernel reads the unmarked sectors "
            "from whatever it opens there, and moo refuses to merge it")))
        return status, found
    if image is not None and not status.size_match and image.grown_over(status.size):
        severity = CORRUPTION if profile is not None and profile.name != "2.4" else WARNING
        found.append(Finding("backing.grown_by_resize", severity, (
            f"the header's size {header.size} is larger than the backing file's {status.size} "
            "and every sector past its end is marked: a COW file grown by the 2.4 COW-resize "
            "patch; profile 2.4 and ubdsim moo accept it, Linux 6.1 and uml_moo refuse it "
            "(Size mismatch)")))
    elif not status.size_match:
        found.append(Finding("backing.size_mismatch", CORRUPTION, (
            f"the backing file '{name}' has {status.size} bytes, the header says {header.size}: "
            "both kernels refuse the open (backing_file_mismatch(): `Size mismatch`); a different "
            "size means a different disk")))
    if not status.mtime_match:
        found.append(Finding("backing.mtime_mismatch", CORRUPTION, (
            f"the backing file '{name}' has mtime {status.mtime}, the header says "
            f"{header.mtime}: both kernels refuse the open (backing_file_mismatch(): `mtime "
            f"mismatch`); {_MOVED}; the HOWTO's `touch` trick skips that check and hides a "
            "backing file whose content really changed")))
    if _is_cow_file(path) and not chain:
        found.append(Finding("backing.is_cow", WARNING, (
            f"the backing file '{name}' is itself a COW file: UML cannot stack, it opens the "
            "backing file raw, so the guest sees that file's header and bitmap as its first "
            "sectors and never its backing file's data; use --chain to read it as a chain "
            "(ubdsim's own)")))
    return status, found


__all__ = ["backing_findings"]
