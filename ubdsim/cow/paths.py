"""Backing paths as the kernel stores them in a COW header.

From: `arch/um/drivers/cow_user.c` absolutize() and write_cow_header() [6.1] (uml_mkcow
carries the same code). The kernel chdir()s into the directory part and asks getcwd(), so
the directory part comes out with symlinks resolved and `..` folded, while the last component
is kept as written. Quirks kept on purpose:
- a path whose only slash is the first character ("/img") makes the kernel chdir("") and
  fail with ENOENT: a backing file directly in / cannot be used by a creating kernel;
- the working directory must fit the kernel's 256-byte buffer (save_cwd[256]), else ERANGE.
ubdsim never changes its own working directory (the harness is multi-threaded): it opens the
directory with O_PATH and reads the /proc/self/fd link, which is what getcwd() would return.
"""
from __future__ import annotations

import errno
import os

from ..errors import UbdError
from ..fileio.names import shown

SAVE_CWD_LEN = 256              # char save_cwd[256] in absolutize()


def _physical_dir(directory: bytes) -> bytes:
    """getcwd() after chdir(directory): the directory's path with symlinks resolved."""
    if directory == b"":
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), directory)
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        return os.fsencode(os.readlink(f"/proc/self/fd/{fd}"))
    finally:
        os.close(fd)


def absolutize(path: bytes, size: int) -> bytes:
    """The absolute backing path the kernel writes into a header whose path field has `size` bytes.

    Raises UbdError carrying the kernel's message id and arguments when the kernel would fail.
    """
    if len(path) > size - 1:
        raise UbdError(f'backing file name "{shown(path)}" is too long (limit {size - 1})',
                       msg_id="cow.name_too_long", args=(os.fsdecode(path), size - 1))
    cwd = os.getcwdb()
    if len(cwd) + 1 > SAVE_CWD_LEN:
        raise UbdError("working directory is longer than the kernel's 256-byte buffer",
                       errno=errno.ERANGE)
    slash = path.rfind(b"/")
    if slash >= 0:
        directory = path[:slash]
        try:
            resolved = _physical_dir(directory)
        except OSError as err:
            raise UbdError(f"cannot enter directory '{shown(directory)}': {err.strerror}",
                           errno=err.errno, msg_id="cow.absolutize_cd",
                           args=(os.fsdecode(directory), err.errno)) from None
        if len(resolved) + 1 > size or len(path) - slash + 1 > size - len(resolved):
            raise UbdError(f"'{shown(path)}' does not fit into {size} bytes",
                           msg_id="cow.absolutize_fit", args=(os.fsdecode(path), size))
        return resolved + path[slash:]
    if len(cwd) + 1 + len(path) + 1 > size:
        raise UbdError(f"'{shown(path)}' does not fit into {size} bytes",
                       msg_id="cow.absolutize_fit", args=(os.fsdecode(path), size))
    return cwd + b"/" + path
