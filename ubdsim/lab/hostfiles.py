"""Reading unit files while the device holds them: never an open+close that drops its locks.

POSIX record locks belong to the process and the inode: ANY close() of ANY descriptor of
that file by the process releases all of them (fcntl(2)). The device model holds a unit's
COW and backing files F_WRLCK/F_RDLCK-locked [6.1] while they are open, so a recorder that
opened c.cow to read its new header and closed it again would silently unlock the unit.
`borrowed_fd()` therefore reads through a descriptor this process already has on the same
inode (found through /proc/self/fd, whose links are stat'ed, never opened), and opens the
file itself only when no descriptor of ours refers to it, when there is no lock of ours
to lose.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from ..fileio import data_extents

ZEROS = bytes(1 << 20)
# Files larger than this get no sha256 in the log header (hashing a 1 TiB sparse backing
# file would take minutes): size, mtime and inode identify them, and replay says so.
HASH_LIMIT = 16 << 30
CHUNK = 1 << 20


@contextmanager
def borrowed_fd(path: str) -> Iterator[int | None]:
    """A readable fd of `path` (None when it does not exist), closed after only if ours."""
    try:
        st = os.stat(path)
    except OSError:
        yield None
        return
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not os.path.samestat(os.stat(f"/proc/self/fd/{name}"), st):
                continue
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
                continue
        except (OSError, ValueError):
            continue
        yield fd
        return
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def fd_size(fd: int) -> int:
    st = os.fstat(fd)
    return os.lseek(fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size


def sha256_fd(fd: int, size: int) -> str:
    """sha256 of the first `size` bytes; holes are hashed as zeros without being read."""
    digest = hashlib.sha256()
    position = 0
    for start, end in data_extents(fd, 0, size):
        _zeros(digest, start - position)
        offset = start
        while offset < end:
            chunk = os.pread(fd, min(CHUNK, end - offset), offset)
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
        _zeros(digest, end - offset)
        position = end
    _zeros(digest, size - position)
    return digest.hexdigest()


def _zeros(digest, count: int) -> None:
    while count > 0:
        step = min(count, len(ZEROS))
        digest.update(ZEROS[:step] if step < len(ZEROS) else ZEROS)
        count -= step


def identity(path: str, *, hash_limit: int = HASH_LIMIT) -> dict:
    """What the log says about a file: exists, kind, size, mtime, inode, sha256 (or None)."""
    with borrowed_fd(path) as fd:
        if fd is None:
            return {"exists": False}
        st = os.fstat(fd)
        size = fd_size(fd)
        kind = "block" if stat.S_ISBLK(st.st_mode) else (
            "regular" if stat.S_ISREG(st.st_mode) else "other")
        digest = sha256_fd(fd, size) if kind != "other" and size <= hash_limit else None
    return {"exists": True, "kind": kind, "size": size, "mtime_ns": st.st_mtime_ns,
            "ino": st.st_ino, "sha256": digest}


def file_content(path: str) -> tuple[int, list[list[int]], bytes] | None:
    """(length, data extents [[offset, length]...], their bytes) of `path`, None if missing."""
    with borrowed_fd(path) as fd:
        if fd is None:
            return None
        size = fd_size(fd)
        extents, parts = [], []
        for start, end in data_extents(fd, 0, size):
            chunk = os.pread(fd, end - start, start)
            extents.append([start, len(chunk)])
            parts.append(chunk)
    return size, extents, b"".join(parts)


def read_range(path: str, offset: int, length: int) -> bytes:
    with borrowed_fd(path) as fd:
        if fd is None:
            return b""
        return os.pread(fd, length, offset)


__all__ = ["HASH_LIMIT", "borrowed_fd", "file_content", "identity", "read_range", "sha256_fd"]
