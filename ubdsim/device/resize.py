"""[resize] The 2003 COW-resize patch (profile 2.4): grow a COW file to a larger device size.

From: the spec's section 4 reconstruction of the lost patch (ubd_kern.c open path of
2.4.20-4um + patch). A larger size means a longer bitmap, so the data area (which must sit at
`data_offset`, right after the bitmap) moves towards the end of the file; the sectors past the
backing file's end get their bits set (they read zeros from the COW's holes, never from the
backing file); the header's `size` becomes the new size; the file grows as a hole.

The result (`plan()` describes it) is the same in both modes; only the way there differs:
- "safe" (default): the new file is built beside the old one (`.NAME.ubdsim-resize`, extents
  copied with copy_file_range(), which reflinks where the filesystem can), fsynced, and
  renamed over the old name. Whenever the process dies, the name holds either the complete
  old file or the complete new one. Costs free space for one copy of the data.
- "in-place": the patch's own move: extend, move the data extents last bytes first, punch the
  holes back, write bitmap and header. A crash mid-move leaves a file that is neither (the
  2003 patch lost disks this way): kept for corruption studies.
`fault(n)` is called before every mutating step n = 0, 1, 2...; tests make it kill the process.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..cow import bitmap as bits
from ..cow.header import CowHeader, pack_header, read_header
from ..cow.layouts import HEADER_READ_SIZE
from ..cow.sizes import Geometry, div_round
from ..errors import ResizeError
from .api import SECTOR_SIZE
from .hostio import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, data_extents, fallocate, pread_full

MODES = ("safe", "in-place")
CHUNK = 1 << 20
Fault = Callable[[int], None]


@dataclass(frozen=True)
class ResizePlan:
    """Where everything goes: old and new header/geometry, the data shift, the new bitmap."""

    old: CowHeader
    new: CowHeader
    old_geometry: Geometry
    new_geometry: Geometry
    old_length: int
    extents: tuple[tuple[int, int], ...]      # data extents of the old data area (file offsets)
    bitmap: bytes                             # the new bitmap, new_geometry.bitmap_len bytes

    @property
    def shift(self) -> int:
        return self.new_geometry.data_offset - self.old_geometry.data_offset

    @property
    def new_length(self) -> int:
        return self.new_geometry.file_length


def plan(fd: int, new_size: int, backing_size: int) -> ResizePlan:
    """Read the COW file and compute its grown form. Raises ResizeError for a smaller size."""
    old = read_header(os.pread(fd, HEADER_READ_SIZE, 0))
    if new_size < old.size:
        raise ResizeError(f"cannot shrink a COW file from {old.size} to {new_size} bytes",
                          errno=errno.EINVAL, msg_id="device.resize_smaller")
    new = replace(old, size=new_size, notes=())
    og, ng = old.geometry(), new.geometry()
    array = np.zeros(ng.bitmap_len, dtype=np.uint8)
    have = min(og.bitmap_len, ng.bitmap_len)
    array[:have] = np.frombuffer(pread_full(fd, have, og.bitmap_offset), dtype=np.uint8)
    # Mark every sector from the backing file's end to the new end (bits the bitmap has room
    # for: V1/V2's rounding bug leaves the last sectors without a bit).
    first = div_round(backing_size, SECTOR_SIZE)
    last = min(ng.sectors, ng.bitmap_len * 8)
    if last > first:
        bits.set_range(array, first, last - first)
    area_end = og.data_offset + old.size
    extents = tuple(data_extents(fd, og.data_offset, area_end))
    return ResizePlan(old=old, new=new, old_geometry=og, new_geometry=ng,
                      old_length=os.fstat(fd).st_size, extents=extents, bitmap=array.tobytes())


class _Steps:
    """Counts mutating steps and calls the fault hook before each."""

    def __init__(self, fault: Fault | None) -> None:
        self.fault, self.count = fault, 0

    def __call__(self) -> None:
        if self.fault is not None:
            self.fault(self.count)
        self.count += 1


def _chunks(offset: int, length: int, chunk: int, backwards: bool) -> list[tuple[int, int]]:
    pieces = [(o, min(chunk, offset + length - o)) for o in range(offset, offset + length, chunk)]
    return pieces[::-1] if backwards else pieces


def resize_file(path: str, new_size: int, backing_size: int, *, mode: str = "safe",
                fault: Fault | None = None, chunk: int = CHUNK) -> tuple[int, int]:
    """Grow the COW file at `path` to cover `new_size` bytes; returns (old_length, new_length).

    Equal size: nothing is touched. Smaller: ResizeError, nothing is touched.
    """
    if mode not in MODES:
        raise ResizeError(f"unknown resize mode {mode!r} (choose from {', '.join(MODES)})")
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        layout = plan(fd, new_size, backing_size)
        if new_size == layout.old.size:
            return layout.old_length, layout.old_length
        step = _Steps(fault)
        if mode == "in-place":
            _move_in_place(fd, layout, step, chunk)
        else:
            _rebuild_beside(path, fd, layout, step, chunk)
        return layout.old_length, layout.new_length
    finally:
        os.close(fd)


def _move_in_place(fd: int, layout: ResizePlan, step: _Steps, chunk: int) -> None:
    """The patch's move: extend, copy data extents last bytes first, punch, bitmap, header."""
    ng, shift = layout.new_geometry, layout.shift
    step()
    os.ftruncate(fd, layout.new_length)
    for offset, length in reversed(layout.extents):
        for piece, size in _chunks(offset, length, chunk, backwards=True):
            data = pread_full(fd, size, piece)
            step()
            os.pwrite(fd, data, piece + shift)
    # What was a hole must read zeros again: punch everything the moved extents do not cover,
    # from the bitmap's new end to the data area's end.
    covered = [(o + shift, o + shift + n) for o, n in layout.extents]
    position = ng.bitmap_offset + ng.bitmap_len
    for start, end in [*covered, (ng.data_offset + layout.old.size, ng.data_offset + layout.old.size)]:
        if start > position:
            step()
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, position, start - position)
        position = max(position, end)
    step()
    os.pwrite(fd, layout.bitmap, ng.bitmap_offset)
    step()
    os.pwrite(fd, pack_header(layout.new), 0)


def _rebuild_beside(path: str, fd: int, layout: ResizePlan, step: _Steps, chunk: int) -> None:
    """Build the grown file under a temporary name, fsync it, rename it over `path`."""
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.ubdsim-resize")
    if os.path.lexists(temp):
        os.unlink(temp)          # left by a resize that died: the old file is still intact
    ng, shift = layout.new_geometry, layout.shift
    out = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(out, os.fstat(fd).st_mode & 0o7777)
        step()
        os.ftruncate(out, layout.new_length)
        for offset, length in layout.extents:
            for piece, size in _chunks(offset, length, chunk, backwards=False):
                step()
                _copy_range(fd, out, size, piece, piece + shift)
        step()
        os.pwrite(out, layout.bitmap, ng.bitmap_offset)
        step()
        os.pwrite(out, pack_header(layout.new), 0)
        step()
        os.fsync(out)
    except BaseException:
        os.close(out)
        os.unlink(temp)
        raise
    os.close(out)
    step()
    os.rename(temp, path)
    dfd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _copy_range(src: int, dst: int, length: int, src_offset: int, dst_offset: int) -> None:
    """copy_file_range() (a reflink where the filesystem shares extents), pread/pwrite else."""
    while length:
        try:
            done = os.copy_file_range(src, dst, length, src_offset, dst_offset)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = os.pwrite(dst, pread_full(src, length, src_offset), dst_offset)
        if done <= 0:
            raise ResizeError("copy of the data area stopped short", errno=errno.EIO)
        length, src_offset, dst_offset = length - done, src_offset + done, dst_offset + done


__all__ = ["MODES", "ResizePlan", "plan", "resize_file"]
