"""Replay: the host files of a recorded run, rebuilt as they were after N host writes.

A log holds every change the device made to a unit's file (host writes `hw`, fallocates
`hf`, whole-file `content` records for a creation or a resize), numbered 1, 2, ... in
order, but only the identity of the files as they were when recording started (path, size,
sha256). So the starting content of each written file comes from, in this order:

1. nothing: the file did not exist when recording started (a COW file the boot created);
2. the log itself: a `snapshot` record (`--record-snapshot` copies each existing unit
   file, its data extents only, into the log at the start);
3. a copy of the original in `--from DIR` (by the file's name), or the original path if
   the file is still unchanged; either way its sha256 must be the one the log recorded.

Files the device only reads (backing files) are never rebuilt; `crash` reads them from
their path (or --from DIR) after checking their sha256 the same way.
"""
from __future__ import annotations

import errno as _errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..device.hostio import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE,
                             fallocate)
from ..errors import UbdError, UsageError
from ..fileio import copy_range, data_extents, new_file_beside, pwrite_all, refuse_same_file, shown
from . import hostfiles
from .logformat import HOST_WRITE_KINDS, Log
from .marks import check_name


class ReplayError(UbdError):
    """The log cannot be replayed as asked (a starting file is missing, a bad --upto)."""


@dataclass(frozen=True)
class Start:
    """Where a file's content at the start of the recording comes from."""

    fid: int
    kind: str                   # "absent", "snapshot", "copy"
    path: str | None = None     # for "copy": the file holding it
    record: dict | None = None  # for "snapshot": the record

    def describe(self) -> str:
        if self.kind == "absent":
            return "absent when recording started"
        if self.kind == "snapshot":
            return "the log's snapshot"
        return f"copied from {shown(self.path or '?')}"


@dataclass(frozen=True)
class ReplayedFile:
    fid: int
    original: str               # the recorded path
    output: str | None          # where it was written (None: absent at that point)
    exists: bool
    size: int
    sha256: str | None
    start: str                  # Start.describe()
    writes: int                 # host writes applied to it


@dataclass(frozen=True)
class ReplayResult:
    log: str
    upto: int                   # host writes applied
    total: int                  # host writes in the log
    mark: str | None
    files: tuple[ReplayedFile, ...]
    matches_live: bool | None   # upto == total: the files equal the live run's final sha256


def resolve_upto(log: Log, text: str | None) -> tuple[int, str | None]:
    """`--upto N|MARK|last|start` -> (host writes to apply, the mark's name or None)."""
    total = len(log.host_writes())
    if text is None or text in ("last", "end"):
        return total, None
    if text == "start":
        return 0, None
    if text.isdigit():
        count = int(text)
        if count > total:
            raise UsageError(f"--upto {count}: the log has {total} host writes")
        return count, None
    marks = log.marks()
    if text in marks:
        return marks[text], text
    if check_name(text) is not None:
        raise UsageError(f"--upto {text!r}: give a number of host writes (0..{total}), a mark, "
                         "'start' or 'last'")
    known = ", ".join(marks) or "none"
    raise UsageError(f"--upto {text}: no such mark in the log (marks: {known})")


def written_files(log: Log) -> list[int]:
    """Ids of the files the log changes, in id order."""
    return sorted({r["f"] for r in log.records if r["k"] in HOST_WRITE_KINDS})


def find_start(log: Log, fid: int, from_dir: str | None) -> Start:
    """Where file `fid`'s starting content is; raises ReplayError (one line) if nowhere."""
    entry = log.files[fid]
    if not entry.get("exists"):
        return Start(fid, "absent")
    if entry.get("seen") == "later":
        raise ReplayError(f"'{shown(entry['path'])}' first appeared in the log after recording "
                          "started; its content then is unknown")
    for record in log.records:
        if record["k"] == "snapshot" and record["f"] == fid:
            return Start(fid, "snapshot", record=record)
    candidate = matching_copy(entry, from_dir)
    if candidate is not None:
        return Start(fid, "copy", path=candidate)
    where = f" or in {shown(from_dir)}" if from_dir else ""
    raise ReplayError(
        f"'{shown(entry['path'])}' existed when recording started (sha256 "
        f"{(entry.get('sha256') or '?')[:16]}...) and neither the log holds a snapshot of it "
        f"nor is an unchanged copy at its path{where}: pass --from DIR with a copy of the "
        "original, or record with --record-snapshot")


def matching_copy(entry: dict[str, Any], from_dir: str | None) -> str | None:
    """A file with the recorded content: DIR/name first, then the original path."""
    candidates = []
    if from_dir:
        candidates.append(os.path.join(from_dir, os.path.basename(entry["path"])))
    candidates.append(entry["path"])
    for path in candidates:
        if same_content(path, entry):
            return path
    return None


def same_content(path: str, entry: dict[str, Any]) -> bool:
    try:
        found = hostfiles.identity(path)
    except OSError:
        return False
    if not found.get("exists") or found.get("size") != entry.get("size"):
        return False
    if entry.get("sha256") is None:       # too large to hash when recorded: size and mtime
        return found.get("mtime_ns") == entry.get("mtime_ns")
    return found.get("sha256") == entry["sha256"]


def write_start(fd: int, start: Start, log: Log) -> None:
    """Fill the empty file `fd` with `start`'s content (holes stay holes)."""
    if start.kind == "snapshot":
        set_content(fd, start.record, log.payload(start.record))
    elif start.kind == "copy":
        src = os.open(start.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = hostfiles.fd_size(src)
            os.ftruncate(fd, size)
            for lo, hi in data_extents(src, 0, size):
                copy_range(src, fd, hi - lo, lo, lo)
        finally:
            os.close(src)


def set_content(fd: int, record: dict[str, Any], payload: memoryview) -> None:
    """A `content`/`snapshot` record: the file becomes exactly its length and extents."""
    os.ftruncate(fd, 0)
    os.ftruncate(fd, record["len"])
    at = 0
    for offset, length in record["ext"]:
        pwrite_all(fd, payload[at:at + length], offset)
        at += length


def apply_record(fd: int, record: dict[str, Any], log: Log) -> None:
    """One host write record applied to the file `fd` (which exists)."""
    kind = record["k"]
    if kind == "hw":
        pwrite_all(fd, log.payload(record), record["o"])
    elif kind == "hf":
        mode = FALLOC_FL_KEEP_SIZE | (FALLOC_FL_PUNCH_HOLE if record["op"] == "punch"
                                      else FALLOC_FL_ZERO_RANGE)
        try:
            fallocate(fd, mode, record["o"], record["len"])
        except OSError as err:
            if err.errno not in (_errno.EOPNOTSUPP, _errno.ENOSYS):
                raise
            end = min(record["o"] + record["len"], os.fstat(fd).st_size)
            if end > record["o"]:
                pwrite_all(fd, bytes(end - record["o"]), record["o"])
    elif kind == "content":
        set_content(fd, record, log.payload(record))


class FileSet:
    """The written files of a log, rebuilt in a directory and advanced write by write.

    `paths[fid]` is each file's path there; a file absent at the current point does not
    exist on disk (`exists[fid]` False)."""

    def __init__(self, log: Log, directory: str, from_dir: str | None = None,
                 names: dict[int, str] | None = None) -> None:
        self.log = log
        self.fids = written_files(log)
        self.starts = {fid: find_start(log, fid, from_dir) for fid in self.fids}
        self.names = names or output_names(log, self.fids)
        self.paths = {fid: os.path.join(directory, self.names[fid]) for fid in self.fids}
        self.fds: dict[int, int] = {}
        self.writes = [r for r in log.records if r["k"] in HOST_WRITE_KINDS]
        self.point = 0
        for fid in self.fids:
            if self.starts[fid].kind != "absent":
                fd = self._create(fid)
                write_start(fd, self.starts[fid], log)

    def _create(self, fid: int) -> int:
        fd = os.open(self.paths[fid], os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self.fds[fid] = fd
        return fd

    def exists(self, fid: int) -> bool:
        return fid in self.fds

    def advance(self) -> dict[str, Any]:
        """Apply the next host write; returns its record."""
        record = self.writes[self.point]
        fid = record["f"]
        fd = self.fds.get(fid)
        if fd is None:
            fd = self._create(fid)
        apply_record(fd, record, self.log)
        self.point += 1
        return record

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def output_names(log: Log, fids: Iterable[int]) -> dict[int, str]:
    """The name each file gets in the output directory: its own, or `fN-name` on a clash."""
    base = {fid: os.path.basename(log.files[fid]["path"]) for fid in fids}
    counts: dict[str, int] = {}
    for name in base.values():
        counts[name] = counts.get(name, 0) + 1
    return {fid: (name if counts[name] == 1 else f"f{fid}-{name}") for fid, name in base.items()}


def replay(log: Log, upto: str | None, into: str, *, from_dir: str | None = None,
           force: bool = False) -> ReplayResult:
    """Rebuild every written file of `log` after `upto` host writes into directory `into`.

    Each output is built beside its target and published whole (fileio.new_file_beside):
    an existing file is refused unless `force`, and never one of the recorded files
    themselves. A file absent at that point is not written (and an old one is left alone)."""
    count, mark = resolve_upto(log, upto)
    fids = written_files(log)
    if not fids:
        raise ReplayError("the log records no host write: there is nothing to rebuild")
    os.makedirs(into, exist_ok=True)
    names = output_names(log, fids)
    originals = {f"recorded file {log.files[f]['path']}": log.files[f]["path"]
                 for f in log.files}
    for fid in fids:
        target = os.path.join(into, names[fid])
        refuse_same_file(target, originals, "replay into")
        if not force and os.path.lexists(target):
            raise ReplayError(f"'{shown(target)}' exists: refusing to replace it (use --force, "
                              "or another --into directory)", errno=_errno.EEXIST)
    scratch = os.path.join(into, f".ubdsim-replay.{os.getpid()}")
    os.mkdir(scratch, 0o700)
    files = FileSet(log, scratch, from_dir, names)
    try:
        counts = {fid: 0 for fid in fids}
        while files.point < count:
            counts[files.advance()["f"]] += 1
        out = []
        for fid in fids:
            entry = log.files[fid]
            start = files.starts[fid].describe()
            if not files.exists(fid):
                out.append(ReplayedFile(fid, entry["path"], None, False, 0, None, start, 0))
                continue
            target = os.path.join(into, names[fid])
            with new_file_beside(target, exclusive=not force) as fd:
                src = files.fds[fid]
                size = os.fstat(src).st_size
                os.ftruncate(fd, size)
                for lo, hi in data_extents(src, 0, size):
                    copy_range(src, fd, hi - lo, lo, lo)
                digest = hostfiles.sha256_fd(fd, size)
            out.append(ReplayedFile(fid, entry["path"], target, True, size, digest, start,
                                    counts[fid]))
    finally:
        files.close()
        for name in os.listdir(scratch):
            os.unlink(os.path.join(scratch, name))
        os.rmdir(scratch)
    matches = None
    end = log.end()
    if count == len(files.writes) and end is not None:
        finals = {f["f"]: f for f in end.get("files", [])}
        matches = all(finals.get(r.fid, {}).get("sha256") == r.sha256
                      and bool(finals.get(r.fid, {}).get("exists")) == r.exists
                      for r in out if r.fid in finals)
    return ReplayResult(log.path, count, len(files.writes), mark, tuple(out), matches)


__all__ = ["FileSet", "ReplayError", "ReplayResult", "ReplayedFile", "Start", "apply_record",
           "find_start", "output_names", "replay", "resolve_upto", "set_content",
           "written_files"]
