"""[resize] The 2003 COW-resize patch (profile 2.4): grow a COW file to a larger device size.

From: the spec's section 4 reconstruction of the lost patch (ubd_kern.c open path of
2.4.20-4um + patch). A larger size means a longer bitmap, so the data area (which must sit at
`data_offset`, right after the bitmap) moves towards the end of the file; the sectors past the
backing file's end get their bits set (they read zeros from the COW's holes, never from the
backing file); the header's `size` becomes the new size; the file grows as a hole.

The result (`plan()` describes it) is the same in both modes; only the way there differs:
- "safe" (default): the new file is built beside the old one (`.NAME.ubdsim-resize`, created
  O_EXCL|O_NOFOLLOW in the directory of the file itself, symlinks resolved; extents copied
  with copy_file_range(), which reflinks where the filesystem can), given the old file's
  owner, group and mode, fsynced, and renamed over the old file. Whenever the process dies,
  the name holds either the complete old file or the complete new one. Costs free space for
  one copy of the data. A file with more than one hard link is refused (a rename would split
  the links: the others would keep the old file and miss the guest's writes).
- "in-place": the patch's own move: extend, move the data extents last bytes first, punch the
  holes back, write bitmap and header. A crash mid-move leaves a file that is neither (the
  2003 patch lost disks this way): kept for corruption studies. Same inode, so links and
  metadata stay as they are.
Memory is bounded for any size (a 1 TiB -> 16 TiB grow stays under 100 MB): the new bitmap is
built CHUNK bytes at a time from the old bitmap's data extents (SEEK_DATA) and the grown
tail's bits, and a chunk that comes out all zero is left a hole, never written.
ubdsim's own refusals (a hard-linked or non-regular file) have no counterpart in the patch.
`fault(n)` is called before every mutating step n = 0, 1, 2...; tests make it kill the process.
"""
from __future__ import annotations

import errno
import os
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np

from ..cow import bitmap as bits
from ..cow.header import CowHeader, pack_header, read_header
from ..cow.layouts import HEADER_READ_SIZE
from ..cow.sizes import Geometry, div_round
from ..errors import ResizeError
from ..fileio import copy_range
from ..fileio.steps import Fault, FaultSteps
from .api import SECTOR_SIZE
from .hostio import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, data_extents, fallocate,
                     iter_extents, pread_full, pwrite_full)

MODES = ("safe", "in-place")
CHUNK = 1 << 20
TEMP_SUFFIX = ".ubdsim-resize"


@dataclass(frozen=True)
class ResizePlan:
    """Where everything goes: old and new header/geometry, the data shift, the marked tail.

    The new bitmap is never held whole: `bitmap_chunks()` produces it piece by piece."""

    old: CowHeader
    new: CowHeader
    old_geometry: Geometry
    new_geometry: Geometry
    old_length: int
    marked: tuple[int, int]                   # bits [first, end) the grown tail sets

    @property
    def shift(self) -> int:
        return self.new_geometry.data_offset - self.old_geometry.data_offset

    @property
    def new_length(self) -> int:
        return self.new_geometry.file_length

    def data_extents(self, fd: int) -> Iterator[tuple[int, int]]:
        """The old data area's data extents (file offsets, lengths), holes skipped, lazily."""
        og = self.old_geometry
        return iter_extents(fd, og.data_offset, og.data_offset + self.old.size)

    def bitmap_chunks(self, fd: int, chunk: int = CHUNK, changed_only: bool = False
                      ) -> Iterator[tuple[int, memoryview]]:
        """(file offset, bytes) of every piece of the new bitmap that is not all zero.

        The new bitmap is the old one's bytes (only its data extents are read), zeros after
        them, and bits `marked` set; pieces are at most `chunk` bytes, and an all-zero piece
        is skipped, so the caller leaves it a hole. `changed_only` (in place, over the old
        bitmap) also skips pieces that lie wholly in the old bitmap and gain no bit."""
        og, ng = self.old_geometry, self.new_geometry
        first, end = self.marked
        have = min(og.bitmap_len, ng.bitmap_len)
        ones = b""
        for start in range(0, ng.bitmap_len, chunk):
            stop = min(start + chunk, ng.bitmap_len)
            lo, hi = max(first, start * 8), min(end, stop * 8)
            if changed_only and stop <= have and hi <= lo:
                continue                                    # the old bytes, already there
            old = (data_extents(fd, og.bitmap_offset + start, og.bitmap_offset + min(stop, have))
                   if start < have else [])
            if not old and hi <= lo:
                continue                                    # all zero: stays a hole
            if not old and (lo, hi) == (start * 8, stop * 8):
                if len(ones) < stop - start:
                    ones = b"\xff" * chunk
                yield ng.bitmap_offset + start, memoryview(ones)[:stop - start]
                continue
            piece = np.zeros(stop - start, dtype=np.uint8)
            for offset, length in old:
                at = offset - og.bitmap_offset - start
                piece[at:at + length] = np.frombuffer(pread_full(fd, length, offset), dtype=np.uint8)
            if hi > lo:
                bits.set_range(piece, lo - start * 8, hi - lo)
            if piece.any():
                yield ng.bitmap_offset + start, memoryview(piece)


def plan(fd: int, new_size: int, backing_size: int) -> ResizePlan:
    """Read the COW file's header and compute its grown form (nothing is read in bulk).
    Raises ResizeError for a smaller size."""
    old = read_header(os.pread(fd, HEADER_READ_SIZE, 0))
    if new_size < old.size:
        raise ResizeError(f"cannot shrink a COW file from {old.size} to {new_size} bytes",
                          errno=errno.EINVAL, msg_id="device.resize_smaller")
    new = replace(old, size=new_size, notes=())
    og, ng = old.geometry(), new.geometry()
    # Mark every sector from the backing file's end to the new end (bits the bitmap has room
    # for: V1/V2's rounding bug leaves the last sectors without a bit).
    first = div_round(backing_size, SECTOR_SIZE)
    last = min(ng.sectors, ng.bitmap_len * 8)
    return ResizePlan(old=old, new=new, old_geometry=og, new_geometry=ng,
                      old_length=os.fstat(fd).st_size, marked=(first, max(first, last)))


def _chunks(offset: int, length: int, chunk: int, backwards: bool) -> Iterator[tuple[int, int]]:
    starts = range(offset, offset + length, chunk)
    for o in (reversed(starts) if backwards else starts):
        yield o, min(chunk, offset + length - o)


def resize_file(path: str, new_size: int, backing_size: int, *, mode: str = "safe",
                fault: Fault | None = None, chunk: int = CHUNK) -> tuple[int, int]:
    """Grow the COW file at `path` to cover `new_size` bytes; returns (old_length, new_length).

    `path` may be a symlink (chain): the file it names is resized, the links stay links.
    Equal size: nothing is touched. Smaller, a hard-linked file (safe mode), not a regular
    file: ResizeError (with the message id and args of its line), nothing is touched.
    """
    if mode not in MODES:
        raise ResizeError(f"unknown resize mode {mode!r} (choose from {', '.join(MODES)})")
    target = os.path.realpath(path)
    # O_NOFOLLOW: `target` has no symlink left in it; one planted since is refused (ELOOP).
    fd = os.open(target, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        layout = plan(fd, new_size, backing_size)
        if new_size == layout.old.size:
            return layout.old_length, layout.old_length
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ResizeError(f"'{path}' is not a regular file: it cannot be grown",
                              errno=errno.EINVAL, msg_id="device.resize_not_regular", args=(path,))
        step = FaultSteps(fault)
        if mode == "in-place":
            _move_in_place(fd, layout, step, chunk)
        else:
            if st.st_nlink > 1:
                raise ResizeError(f"'{path}' has {st.st_nlink} hard links: renaming a grown copy "
                                  "over it would split them", errno=errno.EMLINK,
                                  msg_id="device.resize_linked", args=(path, st.st_nlink))
            _rebuild_beside(target, fd, st, layout, step, chunk)
        return layout.old_length, layout.new_length
    finally:
        os.close(fd)


def _move_in_place(fd: int, layout: ResizePlan, step: FaultSteps, chunk: int) -> None:
    """The patch's move: extend, copy data extents last bytes first, punch, bitmap, header."""
    og, shift = layout.old_geometry, layout.shift
    # Collected before anything moves (the move creates data where the walk would look next),
    # packed as int64 pairs: 16 bytes an extent however fragmented the data area is.
    extents = array("q")
    for offset, length in layout.data_extents(fd):
        extents.extend((offset, length))
    step()
    os.ftruncate(fd, layout.new_length)
    for i in range(len(extents) - 2, -1, -2):
        for piece, size in _chunks(extents[i], extents[i + 1], chunk, backwards=True):
            data = pread_full(fd, size, piece)
            step()
            pwrite_full(fd, data, piece + shift)
    # Everything from the old bitmap's end that the moved extents do not cover must read
    # zeros (old slack, the old data area's first part, stray bytes past it): punch it back
    # to holes. Past the old file's end it is a hole already. Then only the non-zero pieces
    # of the bitmap are written over it.
    position = og.bitmap_offset + og.bitmap_len
    punch_end = min(layout.old_length, layout.new_length)
    gaps = ((extents[i] + shift, extents[i] + shift + extents[i + 1])
            for i in range(0, len(extents), 2))
    for start, end in chain(gaps, [(punch_end, punch_end)]):
        start = min(start, punch_end)
        if start > position:
            step()
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, position, start - position)
        position = max(position, end)
    for offset, piece in layout.bitmap_chunks(fd, chunk, changed_only=True):
        step()
        pwrite_full(fd, piece, offset)
    step()
    pwrite_full(fd, pack_header(layout.new), 0)


def _temp_path(target: str) -> str:
    directory, name = os.path.split(target)
    return os.path.join(directory, f".{name}{TEMP_SUFFIX}")


def _rebuild_beside(target: str, fd: int, st: os.stat_result, layout: ResizePlan, step: FaultSteps,
                    chunk: int) -> None:
    """Build the grown file under a temporary name beside `target` (the real file, not a
    link to it), with its owner, group and mode, fsync it, rename it over `target`."""
    directory = os.path.dirname(target) or "."
    temp = _temp_path(target)
    try:
        os.unlink(temp)          # left by a resize that died: the old file is still intact
    except FileNotFoundError:
        pass
    shift = layout.shift
    # O_EXCL|O_NOFOLLOW: never open through a symlink or a file someone put there meanwhile.
    out = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            # Owner first: chown clears set-id bits, the mode then restores them.
            os.fchown(out, st.st_uid, st.st_gid)
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            step()
            os.ftruncate(out, layout.new_length)
            for offset, length in layout.data_extents(fd):
                for piece, size in _chunks(offset, length, chunk, backwards=False):
                    step()
                    copy_range(fd, out, size, piece, piece + shift)
            for offset, piece in layout.bitmap_chunks(fd, chunk):
                step()
                pwrite_full(out, piece, offset)
            step()
            pwrite_full(out, pack_header(layout.new), 0)
            step()
            os.fsync(out)
        finally:
            os.close(out)
        now = os.stat(target, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ResizeError(f"'{target}' was replaced during the resize", errno=errno.EAGAIN)
        step()
        os.rename(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


__all__ = ["MODES", "ResizePlan", "plan", "resize_file"]
