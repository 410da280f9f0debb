"""New files built beside their target and published whole, and the leftovers of dead builders.

The kernel's own writers (uml_mkcow, uml_moo, the driver's COW creation) write in place and
leave half-made files behind when they fail or die. ubdsim's tools build a new file under a
hidden temporary name in the target's directory and publish it only once it is complete and
on disk, so a crash leaves either no file or the whole file.

A process killed with SIGKILL cannot remove its temporary file. So the builder holds a
flock() on it for as long as it lives, and every later build of the same target removes the
temporaries of ours that nobody holds any more: files named `.TARGET.PID.XXXX.ubdsim-tmp`,
regular, owned by us, and unlocked (a live builder's lock keeps its file; a reused pid
cannot fool the check, because the lock, not the pid, decides).
"""
from __future__ import annotations

import fcntl
import os
import signal
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from .writes import fsync_directory

CREATE_MODE = 0o644             # uml_mkcow's open(..., 0644), before the umask
TEMP_SUFFIX = b".ubdsim-tmp"


def _temp_prefix(target: bytes) -> bytes:
    return b"." + os.path.basename(target) + b"."


def sweep_stale_temps(target: str | bytes) -> list[bytes]:
    """Remove the temporary files that dead builds of `target` left; returns their paths."""
    target_b = os.fsencode(target)
    directory = os.path.dirname(target_b) or b"."
    prefix = _temp_prefix(target_b)
    removed: list[bytes] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            path = os.path.join(directory, name)
            if _remove_if_abandoned(path):
                removed.append(path)
    return removed


def _remove_if_abandoned(path: bytes) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False                 # a live build holds it
        # Still the file we locked under that name? Then nobody can be using it.
        if not os.path.samestat(st, os.lstat(path)):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _locked_temp(directory: bytes, prefix: bytes) -> tuple[int, bytes]:
    """mkstemp + flock, retried if a sweeper removed the name between the two. A signal
    arriving in between (SIGTERM raises here too) removes the half-made temporary."""
    while True:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=prefix + str(os.getpid()).encode() + b".",
                                    suffix=TEMP_SUFFIX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.lstat(temp)):
                return fd, temp
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        os.close(fd)


@contextmanager
def _stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends. Their handlers raise (Ctrl-C and
    ubdsim.cli.signals), and one raised after mkstemp() but before the caller has the name
    would leave the temporary file behind; held, it is raised just after, where the
    caller's cleanup covers it. (pthread_sigmask: only the main thread gets signals here.)"""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _unlink_quietly(path: bytes) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def new_file_beside(target: bytes | str, *, exclusive: bool, sync: bool = True) -> Iterator[int]:
    """An fd of a temporary file in `target`'s directory, published as `target` on success.

    On a clean exit the file is fsynced and put in place, by link() when `exclusive` (EEXIST
    if `target` appeared meanwhile) or by rename() over an old file (a new inode: no byte of
    the old file survives); then the directory is fsynced. On any exception the temporary
    file is removed and `target` is untouched. The mode is CREATE_MODE less the umask.
    Errors of the temporary file itself name `target`, the name the user knows.
    `sync=False` (qemu-img's cache=unsafe) skips both fsyncs: a crashed process still leaves
    `target` whole or untouched, but a power cut may leave it incomplete.
    """
    target_b = os.fsencode(target)
    directory = os.path.dirname(target_b) or b"."
    sweep_stale_temps(target_b)
    fd, temp, published = -1, b"", False
    try:
        try:
            with _stop_signals_deferred():      # no signal between creating and recording it
                fd, temp = _locked_temp(directory, _temp_prefix(target_b))
        except OSError as err:
            raise OSError(err.errno, err.strerror, target_b) from None
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, CREATE_MODE & ~umask)
        yield fd
        try:
            if sync:
                os.fsync(fd)
            if exclusive:
                os.link(temp, target_b)
            else:
                os.rename(temp, target_b)
        except OSError as err:
            raise OSError(err.errno, err.strerror, target_b) from None
        published = True
        if exclusive:
            os.unlink(temp)
        if sync:
            fsync_directory(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if temp and not published:
            _unlink_quietly(temp)


__all__ = ["CREATE_MODE", "TEMP_SUFFIX", "new_file_beside", "sweep_stale_temps"]
