"""The host file operations the driver's I/O thread uses, with the kernel's short-I/O rules.

From: `arch/um/os-Linux/file.c` os_pread_file(), os_pwrite_file(), os_falloc_punch(),
os_falloc_zeroes(), os_sync_file() [6.1]. Python's os module has no fallocate() with mode
flags, so punch/zero-range go through libc via ctypes.

The [resize] patch (resize.py) also walks extents and writes here: `iter_extents()` walks a
range of any size lazily (a 16 TiB data area costs a few lseeks and no list), and
`pwrite_full()` resumes a short write, so a full disk surfaces as ENOSPC, not a silent gap.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator

from .. import fileio

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with `mode` flags; raises OSError like the os module does."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def pread_full(fd: int, length: int, offset: int) -> bytes:
    """do_io() REQ_OP_READ: read until `length` or EOF; the rest is zero-filled."""
    chunks = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    return data if got == length else data + bytes(length - got)


def pwrite_once(fd: int, data: bytes | memoryview, offset: int) -> None:
    """do_io() REQ_OP_WRITE: one pwrite; a short write is an I/O error (the kernel never retries)."""
    written = os.pwrite(fd, data, offset)
    if written != len(data):
        raise OSError(28, "short write")  # ENOSPC is what a short pwrite nearly always means


class PartialWrite(OSError):
    """A data write that failed after `written` bytes reached the file."""

    def __init__(self, code: int, text: str, written: int) -> None:
        super().__init__(code, text)
        self.written = written


def pwrite_segments(fd: int, data: bytes | memoryview, offset: int, segment: int) -> None:
    """do_io() REQ_OP_WRITE [6.1], one os_pwrite_file() per `segment` bytes, stopping at the
    first that fails: ubdsim writes them in one call and, when the host writes less, asks
    again for the rest to learn what the kernel's next segment would have got. A segment
    written in part fails as a short write does (map_error() of the short count: EIO); one
    that could not be written at all fails with the host's errno (ENOSPC, EIO...)."""
    view = memoryview(data).cast("B")
    done = 0
    while True:
        try:
            done += os.pwrite(fd, view[done:], offset + done)
        except OSError as err:
            raise PartialWrite(err.errno or errno.EIO, err.strerror or "write failed", done) from None
        if done == len(view):
            return
        if done % segment:
            raise PartialWrite(errno.EIO, "short write", done)


def data_extents(fd: int, start: int, end: int) -> list[tuple[int, int]]:
    """Allocated (data) extents of [start, end) as (offset, length), via SEEK_DATA/SEEK_HOLE."""
    return list(iter_extents(fd, start, end))


def iter_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """data_extents() one at a time, (offset, length): bounded memory for any range."""
    for lo, hi in fileio.data_extents(fd, start, end):
        yield lo, hi - lo


def pwrite_full(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of `data` at `offset`, resuming after a short write (whose next attempt
    raises the real cause: ENOSPC, EFBIG, EIO)."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view, offset = view[written:], offset + written


def pread_like_do_io(fd: int, length: int, offset: int) -> tuple[bytes, int]:
    """do_io() REQ_OP_READ [6.1], loop for loop: after a partial read it advances the buffer
    and shrinks `len`, but reads again at the SAME `off`; stops when a read fills what is
    left or returns 0, then zero-fills the rest. Returns (data, the final `len`), which the
    caller needs because do_io() adds that `len` to the request's offset.

    So a sector cut by the end of the file gets the tail bytes repeated, not zeros."""
    buf = bytearray(length)
    position, remaining, got = 0, length, 0
    while True:
        position += got
        remaining -= got
        chunk = os.pread(fd, remaining, offset)
        got = len(chunk)
        buf[position:position + got] = chunk
        if not (got < remaining and got != 0):
            break
    return bytes(buf), remaining
