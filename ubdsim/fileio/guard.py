"""The checks every ubdsim tool makes before it reads or replaces a host file.

Each one stops a way of destroying data that a hostile tester found (issue 11): a FIFO that
hangs a reader forever, a target that is the tool's own input, a symlink planted where a
journal goes, a log opened over a disk image. They live here, once, so that every writer
(mkcow, moo, run's log, the journal, temporary files) uses the same guard.
"""
from __future__ import annotations

import errno as _errno
import fcntl
import os
import stat

from ..errors import RefusedFile
from .names import shown

DISK_KINDS = "a regular file or a block device"


def kind_name(mode: int) -> str:
    """What a file is, in the words `ls -l` readers know."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symbolic link"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "an unknown kind of file"


def is_disk_kind(mode: int) -> bool:
    """Only regular files and block devices hold a disk image (what uml_moo and the kernel's
    backing-file checks can size); everything else is refused before it is opened for data."""
    return stat.S_ISREG(mode) or stat.S_ISBLK(mode)


def refuse_non_disk(st: os.stat_result, path: str | bytes, role: str) -> None:
    """Raise RefusedFile when `st` is not a regular file or block device."""
    if not is_disk_kind(st.st_mode):
        raise RefusedFile(f"{role} '{shown(path)}' is {kind_name(st.st_mode)}, not {DISK_KINDS}",
                          errno=_errno.EINVAL)


def open_disk_file(path: str | bytes, flags: int, role: str) -> int:
    """open(2) `path` for data, refusing anything but a regular file or block device.

    The open itself is O_NONBLOCK, so a FIFO (or a symlink to one) cannot hang the tool
    waiting for a writer; the kind is checked on the opened fd (no stat/open race), and the
    flag is cleared again for a file that passes.
    """
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        refuse_non_disk(os.fstat(fd), path, role)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return fd
    except BaseException:
        os.close(fd)
        raise


def same_file(a: str | bytes, b: str | bytes) -> bool:
    """Are `a` and `b` one file (same device and inode, links followed)? False if either is missing."""
    try:
        return os.path.samestat(os.stat(a), os.stat(b))
    except OSError:
        return False


def _input_at(target: str | bytes, st: os.stat_result | None,
              inputs: dict[str, str | bytes]) -> tuple[str, str | bytes] | None:
    """The (role, path) of the input that `target` is: the same inode as `st`, or, for an
    input that does not exist yet (a COW file a kernel is about to create), the same name
    once links and `..` are resolved."""
    real = os.path.realpath(os.fsencode(target))
    for role, path in inputs.items():
        try:
            other = os.stat(path)
        except OSError:
            if os.path.realpath(os.fsencode(path)) == real:
                return role, path
            continue
        if st is not None and os.path.samestat(st, other):
            return role, path
    return None


def refuse_same_file(target: str | bytes, inputs: dict[str, str | bytes], action: str,
                     st: os.stat_result | None = None) -> None:
    """Raise RefusedFile when `target` (or the opened file `st`) is one of `inputs` ({role: path})."""
    if st is None:
        try:
            st = os.stat(target)
        except OSError:
            st = None
    found = _input_at(target, st, inputs)
    if found:
        role, path = found
        raise RefusedFile(f"'{shown(target)}' is the same file as the {role} '{shown(path)}': "
                          f"refusing to {action} it", errno=_errno.EINVAL)


def create_private(path: str | bytes, mode: int = 0o600) -> int:
    """A new file at `path` for writing, never through a symlink or over anything that exists.

    O_CREAT|O_EXCL fails on any existing name, a dangling symlink included, so a link planted
    at a journal's or temporary file's path is never followed.
    """
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def open_own_regular(path: str | bytes, role: str) -> int | None:
    """Open an existing file of ours (a journal) for reading; None when there is none.

    Refused: a symlink (O_NOFOLLOW), anything but a regular file (without blocking on a
    FIFO), and a file owned by another user (someone else's file is not our journal).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == _errno.ELOOP:
            raise RefusedFile(f"{role} '{shown(path)}' is a symbolic link: refusing to follow it "
                              "(remove it if you did not make it)", errno=_errno.ELOOP) from None
        raise
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"is {kind_name(st.st_mode)}, not a regular file"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    if problem:
        os.close(fd)
        raise RefusedFile(f"{role} '{shown(path)}' {problem}: refusing to use it", errno=_errno.EPERM)
    return fd


def open_log(path: str | bytes, protected: dict[str, str | bytes]) -> int:
    """An fd to append a log to: created if missing, never truncated, never one of `protected`.

    Appending loses nothing that was there; `protected` ({role: path}) are the files a run
    works on (COW, backing, raw images), which a log must never land in. The check is made
    on the opened fd, so a name swapped for a link to an image meanwhile is caught too.
    """
    refuse_same_file(path, protected, "write a log into")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
    try:
        refuse_same_file(path, protected, "write a log into", os.fstat(fd))
        return fd
    except BaseException:
        os.close(fd)
        raise


__all__ = ["DISK_KINDS", "kind_name", "is_disk_kind", "refuse_non_disk", "open_disk_file",
           "same_file", "refuse_same_file", "create_private", "open_own_regular", "open_log"]
