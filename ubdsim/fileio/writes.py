"""Whole writes, durable renames and hole-aware extent walks: the primitives every writer uses."""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    """Write all of `data` at `offset`, resuming after short writes; returns len(data)."""
    view = memoryview(data)
    total = len(view)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view, offset = view[written:], offset + written
    return total


def fsync_directory(directory: bytes | str) -> None:
    """Make a rename/link in `directory` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def copy_range(src: int, dst: int, length: int, src_offset: int, dst_offset: int) -> None:
    """copy_file_range(), pread/pwrite where the kernel cannot (across file systems, a device).

    Within one file system the kernel (5.3 on) first tries the file system's remap, the same
    call FICLONERANGE makes: on XFS or btrfs aligned ranges become shared extents (a reflink),
    elsewhere (ext4, tmpfs) the pages are copied inside the kernel, never through user space.
    So no separate FICLONERANGE attempt is made here."""
    while length:
        try:
            done = os.copy_file_range(src, dst, length, src_offset, dst_offset)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            done = pwrite_all(dst, os.pread(src, length, src_offset), dst_offset)
        if done <= 0:
            raise OSError(errno.EIO, "copy stopped short (the source file shrank?)")
        length, src_offset, dst_offset = length - done, src_offset + done, dst_offset + done


def data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The (start, end) byte ranges within [start, end) that hold data, holes skipped.

    Uses SEEK_DATA/SEEK_HOLE, so a 1 TiB sparse file costs a few lseeks, not a read; a file
    system without them reports everything as data, which is still correct (just slower).
    """
    position = start
    while position < end:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:        # no data after `position`
                return
            if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield position, end
                return
            raise
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        position = hole
