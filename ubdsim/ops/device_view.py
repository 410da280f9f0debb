"""One read-only view of a device as a guest sees it, for `map`, `compare` and `convert`.

A ubd unit is either a COW file over a backing file or a raw image (a file with no COW magic:
the kernel's read_cow_header() finds none and uses the file as the disk). Three tools need the
same two things from either kind: the guest-visible bytes, and *where each byte lives* on the
host, so that they can skip what need not be read: `map` prints it, `compare` skips ranges
both devices read from the same host range (two COW files over one backing file), `convert`
copies only what the COW file holds. So a view answers:

- `size`: the device size (the COW header's `size`, which a 2.4-grown file makes larger than
  its backing file; a raw image's length);
- `runs()`: source runs covering the device in order: the host file and offset each run is
  read from, and whether that host range is a hole (it reads as zeros and costs nothing).
  Runs come from the bitmap's set bits (CowImage.marked_runs, which reads only the bitmap's
  data extents) and from SEEK_DATA/SEEK_HOLE on the host files, so a COW file over a 1 TiB
  sparse backing file is described with a few lseeks and without reading a hole;
- `read_into()` / `read_run_into()`: the bytes, through the bitmap as do_io() [6.1] reads them.

Opening checks what `ubdsim moo` checks (ops/merge.check_backing, the same words): a missing
backing file, a size or mtime that differs from the header; a file grown by the 2.4
COW-resize patch is accepted as moo accepts it (the device is the grown disk; past the backing
file's end every sector is marked). Files are fcntl read-locked as moo locks them, so a COW
file a running UML kernel holds writable is refused rather than read while it changes.
A qcow2 image is refused: UML would read its qcow2 bytes as a raw disk, which is never what
the user means; `ubdsim convert` turns a qcow2 overlay into a COW file.

`chain=True` (ubdsim's own --chain; UML cannot stack) opens a COW file's whole backing chain
instead (ops/merge.open_chain: every link checked, loops refused): the device is the raw
bottom's size, and each run's `depth` is the layer holding it (0 = the top COW file, ...,
N = the raw bottom), as qemu-img map numbers a backing chain.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ..cow.header import probe
from ..cow.image import CowImage, read_fully
from ..cow.layouts import MAGIC_AND_VERSION
from ..errors import RefusedFile, UsageError
from ..fileio import data_extents, open_disk_file, shown
from .locks import lock_file
from .merge import check_backing

COW = "cow"            # a marked run, read from the COW file's data area
BACKING = "backing"    # an unmarked run, read from the backing file at the same offset
TAIL = "tail"          # [resize] past the backing file's end of a grown file: marked, a COW hole
RAW = "raw"            # a raw image: the file is the disk
SOURCES = (COW, BACKING, TAIL, RAW)

QCOW_MAGIC = b"QFI\xfb"     # qcow/qcow2 header magic (QEMU docs/interop/qcow2.txt)


@dataclass(frozen=True)
class SourceRun:
    """Device bytes [start, start+length) and the host range they are read from."""

    start: int
    length: int
    source: str                   # one of SOURCES
    file: str                     # the host file (a path as given or as the COW header names it)
    host_offset: int              # where `start` lives in `file`
    hole: bool                    # the host range is a hole: reads as zeros, nothing stored
    host: tuple[int, int] = field(default=(0, 0), compare=False, repr=False)  # (st_dev, st_ino)
    level: int | None = field(default=None, compare=False)   # --chain: the layer holding it

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def depth(self) -> int:
        """qemu-img map's depth: 0 = the top file (COW or raw), 1 = the backing file (with
        --chain: the layer's number, the raw bottom's the largest)."""
        if self.level is not None:
            return self.level
        return 1 if self.source == BACKING else 0

    def host_at(self, offset: int) -> int:
        """The host offset of device byte `offset` (inside this run)."""
        return self.host_offset + (offset - self.start)

    def clipped(self, lo: int, hi: int) -> "SourceRun":
        """The part of this run inside device bytes [lo, hi)."""
        lo, hi = max(lo, self.start), min(hi, self.end)
        return replace(self, start=lo, length=hi - lo, host_offset=self.host_at(lo))


def split_holes(fd: int, lo: int, hi: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_hole) pieces covering host bytes [lo, hi) of `fd` (past EOF: a hole)."""
    position = lo
    for start, end in data_extents(fd, lo, hi):
        if start > position:
            yield position, start, True
        yield start, end, False
        position = end
    if position < hi:
        yield position, hi, True


def same_host_range(a: SourceRun, b: SourceRun, offset: int) -> bool:
    """Do runs `a` and `b` (of two views) read device byte `offset` from the same host byte of
    the same file? Then both devices show the same bytes there and nothing need be read."""
    return a.host == b.host and a.host_at(offset) == b.host_at(offset)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class DeviceView:
    """An opened device (COW + backing, or raw). Use `open_device()` as a context manager."""

    def __init__(self, path: str, kind: str, size: int, fd: int, *,
                 image: CowImage | None = None, backing: str | None = None,
                 backing_fd: int | None = None, backing_bytes: int | None = None,
                 stack=None) -> None:
        self.path = path
        self.kind = kind                     # "cow" or "raw"
        self.size = size
        self.fd = fd                         # the COW file's or raw image's fd
        self.image = image
        self.backing = backing
        self.backing_fd = backing_fd
        self.backing_size = backing_bytes
        self.stack = stack                   # --chain: device/chain.py ChainStack, or None
        self._ids = {fd: _identity(fd)}
        if backing_fd is not None:
            self._ids[backing_fd] = _identity(backing_fd)
        if stack is not None:
            for layer in range(stack.depth + 1):
                self._ids[stack.fd_of(layer)] = _identity(stack.fd_of(layer))

    @property
    def layers(self) -> list[str] | None:
        """--chain: every layer's file, top first (None without --chain)."""
        if self.stack is None:
            return None
        return [self.stack.path_of(n) for n in range(self.stack.depth + 1)]

    # -- where the bytes live ---------------------------------------------------------------
    def runs(self, start: int = 0, end: int | None = None) -> Iterator[SourceRun]:
        """Source runs covering device bytes [start, end) (default: the whole device), in order."""
        end = self.size if end is None else min(end, self.size)
        if start >= end:
            return
        if self.image is None:
            yield from self._host_runs(RAW, self.path, self.fd, start, end, start)
            return
        if self.stack is not None:
            stk = self.stack
            for layer, lo, hi in stk.sources(start, end):
                source = BACKING if layer == stk.depth else COW
                yield from self._host_runs(source, stk.path_of(layer), stk.fd_of(layer), lo, hi,
                                           stk.host_offset(layer, lo), layer)
            return
        ss = self.image.geometry.sectorsize
        data_offset = self.image.geometry.data_offset
        for extent in self.image.extents(start // ss, -(-end // ss)):
            lo = max(start, extent.start * ss)
            hi = min(end, (extent.start + extent.count) * ss)
            if hi <= lo:
                continue
            if not extent.marked:
                yield from self._host_runs(BACKING, self.backing, self.backing_fd, lo, hi, lo)
                continue
            for run in self._host_runs(COW, self.path, self.fd, lo, hi, data_offset + lo):
                yield from self._tail_split(run)

    def _host_runs(self, source: str, path: str, fd: int, lo: int, hi: int, host_lo: int,
                   level: int | None = None) -> Iterator[SourceRun]:
        shift = host_lo - lo
        for h_lo, h_hi, hole in split_holes(fd, host_lo, host_lo + (hi - lo)):
            yield SourceRun(h_lo - shift, h_hi - h_lo, source, path, h_lo, hole, self._ids[fd],
                            level)

    def _tail_split(self, run: SourceRun) -> Iterator[SourceRun]:
        """[resize] A marked hole past the backing file's end is the grown tail, not guest data."""
        limit = self.backing_size if self.backing_size is not None else self.size
        if not run.hole or run.end <= limit:
            yield run
            return
        if run.start < limit:
            yield run.clipped(run.start, limit)
        yield replace(run.clipped(max(run.start, limit), run.end), source=TAIL)

    # -- the bytes ----------------------------------------------------------------------------
    def read_into(self, out: memoryview, offset: int) -> None:
        """Device bytes [offset, offset+len(out)); bytes past the device's end read as zeros."""
        if self.stack is not None:
            n = max(0, min(len(out), self.size - offset))
            self.stack.read_into(out[:n], offset)
            if n < len(out):
                out[n:] = bytes(len(out) - n)
            return
        if self.image is not None:
            self.image.read_into(out, offset, self.backing_fd)
            return
        n = max(0, min(len(out), self.size - offset))
        if n:
            read_fully(self.fd, n, offset, out[:n])
        if n < len(out):
            out[n:] = bytes(len(out) - n)

    def read_run_into(self, run: SourceRun, out: memoryview, offset: int) -> None:
        """Device bytes from `offset` (inside `run`) read straight from the run's host range."""
        if run.hole:
            out[:] = bytes(len(out))
            return
        if self.stack is not None and run.level is not None:
            fd = self.stack.fd_of(run.level)
        else:
            fd = self.backing_fd if run.source == BACKING else self.fd
        read_fully(fd, len(out), run.host_at(offset), out)

    def release_backing_lock(self) -> None:
        """Drop our read lock on the backing file (the fd stays open and checked).

        QEMU tests its own image locks with F_OFD_GETLK for a write lock, which any other
        process's lock conflicts with, even a shared one: while we hold ours, `qemu-img` and
        `qemu-nbd` refuse the backing file ("Failed to get "consistent read" lock"). `convert`
        hands the backing file to them after checking it; QEMU's own locks then guard it.
        """
        if self.backing_fd is not None:
            fcntl.fcntl(self.backing_fd, fcntl.F_SETLK,
                        struct.pack("hhqqi4x", fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))

    # -- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()              # the top image and the bottom fd are its own
            self.stack = None
            self.image, self.backing_fd, self.fd = None, None, -1
            return
        if self.backing_fd is not None:
            os.close(self.backing_fd)
            self.backing_fd = None
        if self.image is not None:
            self.image.close()
            self.image = None
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "DeviceView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def probe_kind(path: str) -> str:
    """"cow", "qcow2" or "raw": what the file's first bytes announce (the kernel's probe)."""
    fd = open_disk_file(path, os.O_RDONLY, "image")
    try:
        head = os.pread(fd, max(MAGIC_AND_VERSION, len(QCOW_MAGIC)), 0)
    finally:
        os.close(fd)
    if head.startswith(QCOW_MAGIC):
        return "qcow2"
    return "raw" if probe(head) is None else "cow"


def open_device(path: str, backing: str | None = None, *, chain: bool = False) -> DeviceView:
    """Open `path` as the device a guest would see; `backing` overrides a COW header's path.

    Refuses, with one line (UbdError): a file that is not a regular file or block device, a
    qcow2 image, `-b` with a raw image, an unreadable COW header, and a backing file that is
    missing or does not match the header (moo's check and wording). `chain`: the COW file's
    whole backing chain (ubdsim's --chain), each link checked; not with `backing`.
    """
    if chain and backing is not None:
        raise UsageError("-b does not combine with --chain (each layer's header names the one "
                         "below it)", errno=_errno.EINVAL)
    kind = probe_kind(path)
    if kind == "qcow2":
        raise RefusedFile(f"'{shown(path)}' is a qcow2 image: UML would read its qcow2 bytes as a "
                          "raw disk; use qemu-img for it, or 'ubdsim convert -O cow' to make it "
                          "a COW file", errno=_errno.EINVAL)
    if kind == "raw":
        if backing is not None:
            raise UsageError(f"'{shown(path)}' is a raw image (no COW header): -b names the "
                             "backing file of a COW file only", errno=_errno.EINVAL)
        fd = open_disk_file(path, os.O_RDONLY, "image")
        try:
            lock_file(fd, shown(path), exclusive=False)
            st = os.fstat(fd)
            size = st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(fd, 0, os.SEEK_END)
            return DeviceView(path, "raw", size, fd)
        except BaseException:
            os.close(fd)
            raise
    if chain:
        from .merge import open_chain
        stk = open_chain(path)
        top = stk.images[0]
        return DeviceView(path, "cow", stk.size, top.fd, image=top, backing=stk.bottom_path,
                          backing_fd=stk.bottom_fd, backing_bytes=stk.size, stack=stk)
    image = CowImage.open(path)
    try:
        lock_file(image.fd, shown(path), exclusive=False)
        backing_path = backing if backing is not None else image.header.backing_path
        backing_bytes = check_backing(image, backing_path)
        bfd = open_disk_file(backing_path, os.O_RDONLY, "backing file")
        try:
            lock_file(bfd, shown(backing_path), exclusive=False)
            return DeviceView(path, "cow", image.geometry.size, image.fd, image=image,
                              backing=backing_path, backing_fd=bfd, backing_bytes=backing_bytes)
        except BaseException:
            os.close(bfd)
            raise
    except BaseException:
        image.close()
        raise


__all__ = ["BACKING", "COW", "RAW", "SOURCES", "TAIL", "DeviceView", "SourceRun", "open_device",
           "probe_kind", "same_host_range", "split_holes"]
