"""Host faults for linux.uml: make chosen host reads or writes of one unit file fail.

The oracle for `ubdsim --inject`: what the real kernel gives its guest (errno, console lines)
when a host call of its ubd I/O thread fails. build/uml_fault.so
(kernel_ref/native/uml_fault.c, built by scripts/setup.sh) interposes glibc's pread64 and
pwrite64, the two calls linux.uml's do_io() uses (os_pread_file(), os_pwrite_file() [6.1]),
and fails those on FILE that match a HostFault; each injected fault is logged, so a test can
tell that it hit.

    fault = HostFault("write", errno=errno.EIO, nth=3)
    run = boot_with_fault(["ubd0=disk.img"], fault, "disk.img", script="...", cwd=tmp)
    run.kernel.status, run.kernel.console, run.faults   # [("write", offset, length, "errno=5")]
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import launcher
from .errors import KernelUnavailable

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "build" / "uml_fault.so"
SOURCE = REPO / "kernel_ref" / "native" / "uml_fault.c"


class FaultLibraryUnavailable(KernelUnavailable):
    """build/uml_fault.so is missing or older than its source (the oracle cannot run: an
    oracle test fails with this one line, tests/conftest.py)."""


def require_library() -> Path:
    if not LIBRARY.is_file() or SOURCE.stat().st_mtime > LIBRARY.stat().st_mtime:
        raise FaultLibraryUnavailable(f"{LIBRARY} is not built or older than {SOURCE.name}: run "
                                      "`make setup` (scripts/setup.sh builds it)")
    return LIBRARY


@dataclass(frozen=True)
class HostFault:
    """Which host calls on the file fail, and how (see uml_fault.c's header).

    Matching calls (op, overlapping [start, end) of the file, of `length` bytes when given)
    are counted from 1; calls nth .. nth+count-1 fail (count 0: all from nth on)."""

    op: str                                 # "read" | "write"
    errno: int = 0                          # fail with this errno
    start: int = 0                          # file byte range the call must overlap
    end: int = 0                            # 0: no upper bound
    length: int = 0                         # only calls of exactly this many bytes (0: any)
    nth: int = 1
    count: int = 1
    short: int | None = None                # write: only this many bytes, then a short count
    crash: bool = False                     # write: do it, then SIGKILL linux.uml

    def spec(self) -> str:
        parts = [f"op={self.op}", f"from={self.start}", f"to={self.end}", f"len={self.length}",
                 f"nth={self.nth}", f"count={self.count}", f"errno={self.errno}"]
        if self.short is not None:
            parts.append(f"short={self.short}")
        if self.crash:
            parts.append("crash=1")
        return ",".join(parts)


@dataclass(frozen=True)
class FaultRun:
    kernel: launcher.KernelRun
    faults: list[tuple[str, int, int, str]]     # (op, file offset, length, what) per fault


def boot_with_fault(options: Sequence[str], fault: HostFault, file: os.PathLike | str,
                    **kwargs) -> FaultRun:
    """launcher.boot() with uml_fault.so preloaded, failing `fault` on `file`."""
    library = require_library()
    with tempfile.TemporaryDirectory(prefix="kref-fault-") as scratch:
        log = Path(scratch) / "faults"
        env = {"UBDSIM_FAULT_FILE": os.fspath(Path(kwargs.get("cwd", ".")) / file),
               "UBDSIM_FAULT": fault.spec(), "UBDSIM_FAULT_LOG": str(log)}
        run = launcher.boot(options, preload=[library], env=env, **kwargs)
        lines = log.read_text().splitlines() if log.exists() else []
    faults = []
    for line in lines:
        op, offset, length, what = line.split("\t")
        faults.append((op, int(offset), int(length), what))
    return FaultRun(run, faults)


__all__ = ["FaultLibraryUnavailable", "FaultRun", "HostFault", "LIBRARY", "boot_with_fault",
           "require_library"]
