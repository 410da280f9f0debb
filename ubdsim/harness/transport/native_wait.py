"""The native wait loop (native/stopwait.c): stops that need no Python never reach it.

A read or write on one of the guest's own descriptors stops in the tracer like one on a ubd
descriptor, because the filter sees only numbers. The C loop answers those stops itself
(PASS: the guest runs the call natively), so a guest that copies a device to /dev/null or a
pipe pays one stop in Python per device call instead of two. The library is compiled on
first use with the host's C compiler into ubdsim's cache directory, named by a hash of its
source; where no compiler is there (or the build fails) `load()` returns None and the
tracer keeps its Python loop, which answers the same stops the same way, only slower.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

SOURCE = Path(__file__).resolve().parent / "native" / "stopwait.c"
FD_CALLS = 512                      # stopwait.c: the size of its fd_calls table
# stopwait.c's fd_calls kinds: FD_PASS, then the lane's, by (writing, positioned)
FD_PASS = 1
LANE_KINDS = {(False, False): 2, (True, False): 3, (False, True): 4, (True, True): 5}


class Lane(ctypes.Structure):
    """struct ubd_lane (stopwait.c): the one open file whose small O_DIRECT calls the C
    loop serves while Python keeps it armed."""

    _fields_ = [("ino", ctypes.c_ulonglong), ("pos", ctypes.c_longlong),
                ("size", ctypes.c_longlong), ("readable", ctypes.c_int),
                ("writable", ctypes.c_int), ("data_fd", ctypes.c_int),
                ("backing_fd", ctypes.c_int), ("data_offset", ctypes.c_longlong),
                ("bitmap", ctypes.c_void_p), ("bitmap_offset", ctypes.c_longlong),
                ("guard", ctypes.c_longlong), ("word", ctypes.c_int),
                ("segment", ctypes.c_int)]


class WaitState(ctypes.Structure):
    """struct ubd_wait (stopwait.c)."""

    _fields_ = [("tid", ctypes.c_int), ("status", ctypes.c_int),
                ("answer_tid", ctypes.c_int), ("answer_cancel", ctypes.c_int),
                ("answer_rax", ctypes.c_ulonglong),
                ("wakeup_fd", ctypes.c_int), ("pad", ctypes.c_int),
                ("memfd_dev", ctypes.c_ulonglong), ("ino", ctypes.c_ulonglong),
                ("passed", ctypes.c_ulonglong), ("fd_calls", ctypes.c_void_p),
                ("armed", ctypes.c_int), ("pad2", ctypes.c_int),
                ("lane_done", ctypes.c_ulonglong), ("lane", Lane)]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ubdsim"


def _build(target: Path) -> bool:
    """Compile the library to `target` (atomically: concurrent runs may build it too)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    os.close(fd)
    try:
        done = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                               "-o", tmp, str(SOURCE)], capture_output=True)
        if done.returncode != 0:
            return False
        os.replace(tmp, target)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir() / f"stopwait-{digest}.so"


@functools.cache
def load() -> ctypes.CDLL | None:
    """The loaded library, built first when needed; None where it cannot be (no compiler,
    an unwritable cache, UBDSIM_PYTHON_WAIT=1 to compare the two loops)."""
    if os.environ.get("UBDSIM_PYTHON_WAIT") == "1":
        return None
    try:
        path = library_path()
        if not (path.is_file() or _build(path)):
            return None
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    lib.ubd_wait.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.ubd_wait.restype = ctypes.c_int
    return lib


def fd_call_table(numbers: Iterable[int],
                  lanes: Mapping[int, tuple[bool, bool]] = {}) -> ctypes.Array:
    """stopwait.c's fd_calls: FD_PASS for each call whose handler passes a non-ubd
    descriptor, the lane's kind for those of `lanes` (number -> (writing, positioned))."""
    table = (ctypes.c_ubyte * FD_CALLS)()
    for nr in numbers:
        if 0 <= nr < FD_CALLS:
            table[nr] = LANE_KINDS[lanes[nr]] if nr in lanes else FD_PASS
    return table
