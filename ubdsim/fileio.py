"""Host-file writing that every ubdsim writer shares: whole writes and durable new files.

The kernel's own writers (uml_mkcow, uml_moo, the driver's COW creation) write in place and
leave half-made files behind when they fail or die. ubdsim's tools build a new file beside
its target and publish it only once it is complete and on disk, so a crash leaves either no
file or the whole file.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

CREATE_MODE = 0o644             # uml_mkcow's open(..., 0644), before the umask


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


@contextmanager
def new_file_beside(target: bytes | str, *, exclusive: bool) -> Iterator[int]:
    """An fd of a temporary file in `target`'s directory, published as `target` on success.

    On a clean exit the file is fsynced and put in place, by link() when `exclusive` (EEXIST
    if `target` appeared meanwhile) or by rename() over an old file (a new inode: no byte of
    the old file survives); then the directory is fsynced. On any exception the temporary
    file is removed and `target` is untouched. The mode is CREATE_MODE less the umask.
    """
    target_b = os.fsencode(target)
    directory = os.path.dirname(target_b) or b"."
    fd, temp = tempfile.mkstemp(dir=directory, prefix=b"." + os.path.basename(target_b) + b".",
                                suffix=b".ubdsim-tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, CREATE_MODE & ~umask)
        yield fd
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if exclusive:
            os.link(temp, target_b)
            os.unlink(temp)
        else:
            os.rename(temp, target_b)
        temp = None
        fsync_directory(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if temp is not None:
            os.unlink(temp)


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
