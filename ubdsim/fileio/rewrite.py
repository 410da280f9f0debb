"""Changing a few bytes of a large file so that a crash leaves the old file or the new one.

An in-place pwrite of a bitmap or a header is not atomic (a torn write, or a kill between
two of them, leaves a file that is neither). So the file is rebuilt beside itself: its data
extents copied under a temporary name (copy_file_range: a reflink where the filesystem shares
extents, and holes stay holes, so a 1 TiB sparse file costs what its data costs), the changes
written there, fsynced, and renamed over the original. A symlink's target is rewritten (the
link stays a link); owner, group and mode are kept; a file with other hard links is refused,
because a rename would split them. The temporary file is a ubdsim temporary (`.NAME.PID.XXX.
ubdsim-tmp`, flock-held), so one left by a kill is swept by the next run.
"""
from __future__ import annotations

import errno as _errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import RefusedFile
from .guard import kind_name
from .names import shown
from .newfile import new_file_beside
from .writes import copy_range, data_extents

Step = Callable[[], None]


def _real_target(path: str | bytes) -> tuple[bytes, os.stat_result]:
    target = os.fsencode(os.path.realpath(path))
    st = os.stat(target)
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile(f"'{shown(path)}' is {kind_name(st.st_mode)}: only a regular file can be "
                          "rewritten safely", errno=_errno.EINVAL)
    if st.st_nlink > 1:
        raise RefusedFile(f"'{shown(path)}' has {st.st_nlink} hard links: a rewritten copy would "
                          "split them; refusing", errno=_errno.EMLINK)
    return target, st


@contextmanager
def rewrite_beside(path: str | bytes, step: Step = lambda: None) -> Iterator[int]:
    """An fd of a full copy of `path`'s file; on a clean exit it replaces that file.

    `step()` is called before each mutating step (tests kill the process there).
    """
    target, st = _real_target(path)
    src = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with new_file_beside(target, exclusive=False) as out:
            os.fchown(out, st.st_uid, st.st_gid)        # chown clears set-id bits: mode after
            os.fchmod(out, stat.S_IMODE(st.st_mode))
            step()
            os.ftruncate(out, st.st_size)
            for lo, hi in data_extents(src, 0, st.st_size):
                step()
                copy_range(src, out, hi - lo, lo, lo)
            yield out
            now = os.stat(target)
            if (now.st_dev, now.st_ino, now.st_size) != (st.st_dev, st.st_ino, st.st_size):
                raise RefusedFile(f"'{shown(path)}' changed while it was being rewritten",
                                  errno=_errno.EAGAIN)
            step()
    finally:
        os.close(src)


__all__ = ["rewrite_beside"]
