"""Creating a COW file: header, an all-clear bitmap, and a data area that is one big hole.

From: `arch/um/drivers/cow_user.c` write_cow_header() and init_cow_file() [6.1], which
uml_mkcow carries verbatim: absolutize the backing path, stat it for mtime and size, write the
header at offset 0, then write ONE zero byte at `data_offset + size - 1`. That last byte sets
the file length; the bitmap is never written, it reads as zeros because it is a hole.

Two layers, because two callers need different things:
- `header_for_backing()` + `write_cow()` work on what the caller gives them (an open fd), so
  the device code can reproduce the kernel's create-on-open exactly, failures included (the
  kernel leaves a half-made file behind; that is the kernel's behaviour to reproduce, not ours).
- `create_cow()` is the tool path (`ubdsim mkcow`): it writes a temporary file in the target's
  directory, fsyncs it, and links/renames it into place, so a crash or an error never leaves a
  half-written COW file (uml_mkcow leaves a 0-byte file when the backing file is missing).
"""
from __future__ import annotations

import errno as _errno
import os
import stat
from enum import Enum

from ..errors import BackingError, BackingMissing, UbdError
from ..fileio import new_file_beside, pwrite_all, shown
from .header import CowHeader, new_header, pack_header
from .layouts import PATH_LEN_V1, PATH_LEN_V3
from .paths import absolutize
from .sizes import Geometry

# uml_mkcow opens its output with mode 0644 (observed: 0644 under umask 0, 0600 under umask 077).


class Tail(Enum):
    """How a writer sets the new file's length (the data area stays a hole either way)."""

    ZERO_BYTE = "zero_byte"    # init_cow_file() [6.1] and uml_mkcow: write one 0 at length-1
    TRUNCATE = "truncate"      # ftruncate() to the full length: no data block at the end at all


def backing_size(path: bytes) -> int:
    """os_file_size() [6.1]: st_size, or the device size for a block device (BLKGETSIZE64)."""
    st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode):
        return st.st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def header_for_backing(backing: str | bytes, version: int = 3, alignment: int = 4096,
                       sectorsize: int = 512) -> CowHeader:
    """The header write_cow_header() builds for `backing`: absolute path, mtime, size.

    Raises UbdError with the kernel's message id (cow.name_too_long, cow.absolutize_cd,
    cow.absolutize_fit, cow.mtime_failed, cow.size_failed) and the errno it returns.
    """
    path = os.fsencode(backing)
    field = PATH_LEN_V1 if version == 1 else PATH_LEN_V3
    absolute = absolutize(path, field)
    named = os.fsdecode(absolute)        # the kernel's message argument: the raw bytes
    # write_cow_header(): os_file_modtime(), then cow_file_size(), both on the absolute path.
    try:
        mtime = int(os.stat(absolute).st_mtime)
    except OSError as err:
        kind = BackingMissing if err.errno == _errno.ENOENT else BackingError
        raise kind(f"backing file '{shown(absolute)}': {err.strerror}", errno=err.errno,
                   msg_id="cow.mtime_failed", args=(named, err.errno)) from None
    try:
        size = backing_size(absolute)
    except OSError as err:
        raise BackingError(f"cannot get the size of backing file '{shown(absolute)}': {err.strerror}",
                           errno=err.errno, msg_id="cow.size_failed", args=(named, err.errno)) from None
    return new_header(version, absolute, mtime, size, sectorsize=sectorsize, alignment=alignment)


def write_cow(fd: int, header: CowHeader, *, tail: Tail = Tail.ZERO_BYTE,
              zero_bitmap: bool = False) -> Geometry:
    """Write a fresh COW file's bytes into the open, empty file `fd`; returns its geometry.

    init_cow_file() [6.1]: header at 0, then one zero byte at data_offset + size - 1.
    `zero_bitmap` writes the bitmap's zeros explicitly (for writers that did so); `tail`
    chooses how the length is set. Nothing is fsynced here: the caller decides.
    """
    geometry = header.geometry()
    pwrite_all(fd, pack_header(header), 0)
    if zero_bitmap and geometry.bitmap_len:
        _write_zeros(fd, geometry.bitmap_offset, geometry.bitmap_len)
    length = geometry.file_length
    if tail is Tail.ZERO_BYTE and length > 0:
        # A zero-size backing puts the byte at data_offset - 1, the bitmap's last page: the
        # same as uml_mkcow (observed: an 8192-byte file for an empty backing file).
        pwrite_all(fd, b"\0", length - 1)
    elif tail is Tail.TRUNCATE:
        os.ftruncate(fd, max(length, os.fstat(fd).st_size))
    return geometry


def create_cow(path: str | bytes, backing: str | bytes, version: int = 3, alignment: int = 4096,
               *, sectorsize: int = 512, exclusive: bool = True, tail: Tail = Tail.ZERO_BYTE,
               zero_bitmap: bool = False, header: CowHeader | None = None) -> CowHeader:
    """Create the COW file `path` over `backing`, atomically; returns the header written.

    The file is built under a temporary name in the same directory, fsynced, then put in
    place: with `exclusive` by link() (fails with EEXIST if `path` appeared meanwhile, like
    uml_mkcow's O_EXCL), otherwise by rename() over the old file (a new inode: no byte of the
    old file survives, unlike uml_mkcow -f). `header` overrides the one built from `backing`
    (tests and tools that need an exact header). On any failure nothing is left behind.
    """
    target = os.fsencode(path)
    if header is None:
        header = header_for_backing(backing, version, alignment, sectorsize)
    if not exclusive:
        target = _replaceable_target(target)
    elif os.path.lexists(target):
        raise UbdError(f"'{shown(target)}' already exists (use -f to replace it)",
                       errno=_errno.EEXIST)
    with new_file_beside(target, exclusive=exclusive) as fd:
        write_cow(fd, header, tail=tail, zero_bitmap=zero_bitmap)
    return header


def _replaceable_target(target: bytes) -> bytes:
    """The file -f replaces: a symlink's target (as uml_mkcow -f writes through it), and only
    a regular file (never a block device or a directory)."""
    if not os.path.lexists(target):
        return target
    real = os.fsencode(os.path.realpath(target))
    if os.path.exists(real) and not stat.S_ISREG(os.stat(real).st_mode):
        raise UbdError(f"'{shown(target)}' exists and is not a regular file; not replacing it",
                       errno=_errno.EINVAL)
    return real




def _write_zeros(fd: int, offset: int, length: int, chunk: int = 1 << 20) -> None:
    zeros = bytes(min(chunk, length))
    while length:
        step = min(chunk, length)
        pwrite_all(fd, zeros[:step], offset)
        offset, length = offset + step, length - step


__all__ = ["Tail", "backing_size", "header_for_backing", "write_cow", "create_cow"]
