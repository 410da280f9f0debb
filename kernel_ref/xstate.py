"""Whether this host needs the XSAVE fix for linux.uml, and the preload that applies it.

Debian's linux.uml 6.1 saves and restores FP state with PTRACE_GETREGSET/SETREGSET
NT_X86_XSTATE and a fixed buffer of LINUX_UML_XSTATE_BYTES (arch/x86/um/os-Linux/registers.c
save_fp_registers()/restore_fp_registers(); the size is user-offsets.c's HOST_FP_SIZE). The host
refuses a SET shorter than its whole XSAVE area with EFAULT (xstateregs_set()), so where that
area is larger (AMX hosts: 11008 bytes) linux.uml dies at its first user process. The fix is
kernel_ref/native/uml_xstate_fix.c, built by scripts/setup.sh into build/ and preloaded.

The host's size is measured the way the kernel sizes the regset: a traced child's
NT_X86_XSTATE GETREGSET with a large buffer returns the length the host fills. The same probe
tells whether this process may ptrace at all, which linux.uml needs for every guest process.

UBDSIM_XSTATE_FIX=auto (default: preload only where the host needs it), on (always, to show
the fix changes nothing where it is not needed), or off (never, to show the failure).
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from ubdsim.harness.transport import ptrace

from .errors import KernelUnavailable

# arch/x86/um/user-offsets.c [6.1 Debian]: DEFINE_LONGS(HOST_FP_SIZE, 2696), the AVX-512
# XSAVE size; linux.uml passes FP_SIZE * sizeof(long) = 2696 bytes (the preload library
# reports the length it sees: tests/kernel_ref/test_xstate_fix.py checks this number).
LINUX_UML_XSTATE_BYTES = 2696
FIX_LIBRARY = Path(__file__).resolve().parents[1] / "build" / "uml_xstate_fix.so"
MODE_VARIABLE = "UBDSIM_XSTATE_FIX"
MODES = ("auto", "on", "off")

_PROBE_BYTES = 64 * 1024      # larger than any XSAVE area


@dataclass(frozen=True)
class XstateFix:
    """The decision for this host: whether the preload is applied, and why."""
    host_bytes: int           # the host's NT_X86_XSTATE regset size (its XSAVE area)
    mode: str                 # auto, on or off (UBDSIM_XSTATE_FIX)
    applied: bool

    @property
    def needed(self) -> bool:
        return self.host_bytes > LINUX_UML_XSTATE_BYTES

    def describe(self) -> str:
        """One line for logs, `kernel_ref boot` and the first line of a test run."""
        sizes = (f"the host's XSAVE area is {self.host_bytes} bytes, linux.uml's buffer "
                 f"{LINUX_UML_XSTATE_BYTES}")
        if self.applied and self.needed:
            return f"XSAVE fix applied ({sizes}): preloading {FIX_LIBRARY.name}"
        if self.applied:
            return f"XSAVE fix forced on by {MODE_VARIABLE}=on ({sizes}: not needed here)"
        if self.needed:
            return (f"XSAVE fix turned off by {MODE_VARIABLE}=off although {sizes}: "
                    "linux.uml will die at its first process")
        return f"XSAVE fix not needed ({sizes})"

    def environment(self) -> dict[str, str]:
        """The variables to add to linux.uml's environment."""
        if not self.applied:
            return {}
        preload = os.environ.get("LD_PRELOAD")
        return {"LD_PRELOAD": f"{FIX_LIBRARY}:{preload}" if preload else str(FIX_LIBRARY)}


def measure_host_xstate() -> int:
    """The host's XSTATE regset size in bytes, from a stopped traced child.

    Raises KernelUnavailable when this process may not ptrace (linux.uml could not either)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child: be traced, then stop
        try:
            os.close(read_end)
            if ptrace.traceme() != 0:
                os.write(write_end, str(ctypes.get_errno()).encode())
                os._exit(1)
            os.close(write_end)
            os.kill(os.getpid(), signal.SIGSTOP)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            failure = pipe.read()
        if failure:
            raise KernelUnavailable("cannot ptrace on this host (PTRACE_TRACEME: "
                                    f"{os.strerror(int(failure))}), and linux.uml runs every "
                                    "guest process under ptrace")
        _, status = os.waitpid(pid, 0)
        if not os.WIFSTOPPED(status):
            raise KernelUnavailable(f"cannot ptrace on this host (traced child ended: {status:#x})")
        try:
            return len(ptrace.get_regset(pid, ptrace.NT_X86_XSTATE, _PROBE_BYTES))
        except OSError as err:
            if err.errno in (errno.EIO, errno.EINVAL, errno.ENODEV):
                return 0              # no XSAVE at all: linux.uml falls back to GETFPREGS
            raise KernelUnavailable(f"cannot ptrace on this host (PTRACE_GETREGSET: "
                                    f"{err.strerror})") from None
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


_lock = threading.Lock()
_host_bytes: int | None = None


def host_xstate_bytes() -> int:
    """measure_host_xstate(), once per process."""
    global _host_bytes
    with _lock:
        if _host_bytes is None:
            _host_bytes = measure_host_xstate()
        return _host_bytes


def chosen_mode(mode: str | None = None) -> str:
    """`mode`, else $UBDSIM_XSTATE_FIX, else auto."""
    return mode or os.environ.get(MODE_VARIABLE, "") or "auto"


def decide(mode: str | None = None) -> XstateFix:
    """The fix for this host under chosen_mode(mode)."""
    mode = chosen_mode(mode)
    if mode not in MODES:
        raise KernelUnavailable(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, "
                                f"not {mode!r}")
    host = host_xstate_bytes()
    applied = mode == "on" or (mode == "auto" and host > LINUX_UML_XSTATE_BYTES)
    fix = XstateFix(host_bytes=host, mode=mode, applied=applied)
    if applied and not FIX_LIBRARY.is_file():
        raise KernelUnavailable(f"{fix.describe()}, but {FIX_LIBRARY} is not built: run "
                                "`make setup` (scripts/setup.sh builds it with the C compiler)")
    return fix
