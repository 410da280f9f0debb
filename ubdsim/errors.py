"""The one exception tree of ubdsim.

Every failure the kernel would report carries the errno the kernel returns and, where the
kernel prints a message, the id of that message in `ubdsim.messages` plus its arguments, so
callers can print the kernel's exact text (`str(err)`) or decide on the errno alone.
Nothing else is raised across module boundaries (QEMU's `-errno` + `Error **errp` idea).
"""
from __future__ import annotations

import errno as _errno


class UbdError(Exception):
    """Base of every ubdsim error: a message, an errno, and optionally a kernel message id."""

    default_errno = _errno.EINVAL

    def __init__(self, message: str, *, errno: int | None = None, msg_id: str | None = None,
                 args: tuple = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errno = self.default_errno if errno is None else errno
        self.msg_id = msg_id
        self.msg_args = args

    def __str__(self) -> str:
        return self.message


class CowFormatError(UbdError):
    """A file that is not a readable COW file (cow_user.c read_cow_header() failures)."""


class NotCowFile(CowFormatError):
    """Magic absent in both byte orders: the kernel prints nothing and treats it as raw."""


class ShortHeader(CowFormatError):
    """Fewer bytes than the header needs (`read_cow_header - short header` and kin)."""


class BadVersion(CowFormatError):
    """A version the profile cannot read (`read_cow_header - invalid COW version`)."""


class BackingError(UbdError):
    """The backing file is missing or does not match the COW header."""


class BackingMissing(BackingError):
    default_errno = _errno.ENOENT


class SizeMismatch(BackingError):
    """ubd_kern.c backing_file_mismatch(): header size differs from the backing file's."""


class MtimeMismatch(BackingError):
    """ubd_kern.c backing_file_mismatch(): header mtime differs from the backing file's."""


class LockedError(UbdError):
    """Another process holds an fcntl lock on the file (ubd_kern.c open_ubd_file(), 6.1)."""

    default_errno = _errno.EAGAIN


class CmdlineError(UbdError):
    """A `ubd` option the kernel rejects; the kernel prints its text and boots on."""


class ResizeError(UbdError):
    """The [resize] patch refuses a change (a smaller size, or an I/O failure mid-resize)."""


class DeviceIOError(UbdError):
    """A host I/O failure while serving a request (short write, full disk). `written`: the
    bytes of a failed data write that reached the file before it failed."""

    default_errno = _errno.EIO
    written = 0


class UsageError(UbdError):
    """ubdsim's own command-line misuse (not a kernel behaviour)."""


class RefusedFile(UbdError):
    """ubdsim's own guard: a file a tool will not read or write (wrong kind, an input, a link)."""
