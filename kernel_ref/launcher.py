"""One launcher for the real kernel, linux.uml 6.1, shared by every place that boots it.

Oracle tests, kernel_ref's backend, the benchmarks and `python -m kernel_ref boot` all boot
through start() or boot(), so every boot is set up the same way (ubd-behaviour.md section 0):
- the host's / is the guest's root (hostfs); a generated init runs the guest command in the
  caller's directory with its stdout and stderr in files, prints the command's status on the
  console, syncs and powers off through sysrq, and waits for the power-off (an init that
  exits makes the kernel panic and abort instead of exiting: slow hosts take seconds);
- init, the output files and the mconsole socket (uml_dir=) live in a private directory that
  is removed afterwards;
- the XSAVE fix is preloaded where the host needs it (xstate.py);
- a timeout bounds the boot and then kills the whole process group (linux.uml's helper
  processes outlive a killed parent);
- the caller's kernel options come after the fixed ones, so an option that swallows the rest
  of the line (a lone quote, `--`) swallows nothing of the launcher's.
When the kernel cannot run here at all (not installed, no ptrace, it dies before init runs),
KernelUnavailable says why in one line.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .errors import KernelUnavailable
from .host import give_to, make_reachable, run_as_prefix
from .xstate import FIX_LIBRARY, XstateFix, chosen_mode, decide

BINARY = "linux.uml"
DEFAULT_MEM = "64M"
DEFAULT_TIMEOUT = 60.0        # seconds; a boot takes about 1.2 s
GROUP_EXIT_SECONDS = 10.0     # how long killed helper processes may take to go
INIT_MARK = "KERNEL-REF-INIT"
EXIT_MARK = "KERNEL-REF-EXIT="
_EXIT_LINE = re.compile(rf"^{EXIT_MARK}(\d+)\r?$", re.M)
# Lines that say why a kernel died when it did not panic, most telling first
# (arch/um/os-Linux/skas/process.c userspace() errors, start_up.c's start-up checks).
_FAILURE = re.compile(r"failed, errno = |errno = -?\d+")
_DEATH_PATTERNS = [_FAILURE, re.compile(r"check_ptrace|check_sysemu"),
                   re.compile(r"(?i)\b(fatal|failed|error|abort)")]

_INIT = """#!/bin/sh
# init of a linux.uml boot, written by kernel_ref/launcher.py
echo {init_mark}
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
mount -t proc proc /proc 2>/dev/null
cd {cwd} && {command} >{out} 2>{err}
echo "{exit_mark}$?"
sync
echo o > /proc/sysrq-trigger && while :; do sleep 1; done
"""


@dataclass(frozen=True)
class KernelRun:
    """What one boot gave: the console, the guest command's output and status."""
    console_bytes: bytes      # everything linux.uml printed (con0 is its stdout)
    output_bytes: bytes       # the guest command's stdout (and stderr with merge_stderr)
    error_bytes: bytes        # the guest command's stderr (empty with merge_stderr)
    status: int | None        # the guest command's exit status; None: it did not finish
    returncode: int | None    # linux.uml's own; None: killed at the timeout
    seconds: float
    timeout: float
    fix: XstateFix

    @property
    def console(self) -> str:
        return self.console_bytes.decode("utf-8", "replace").replace("\r", "")

    @property
    def output(self) -> str:
        return self.output_bytes.decode("utf-8", "replace")

    @property
    def errors(self) -> str:
        return self.error_bytes.decode("utf-8", "replace")

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def problem(self) -> str:
        """Why the guest command has no status, in one line ("" when it has one)."""
        if self.status is not None:
            return ""
        if self.timed_out:
            return f"linux.uml did not finish within {self.timeout:g} s (killed)"
        return (f"the guest command did not finish: linux.uml ended ({_how(self.returncode)}) "
                f"after: {death_line(self.console)}")


def _how(returncode: int | None) -> str:
    if returncode is None:
        return "killed at the timeout"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit {returncode}"


def death_line(console: str) -> str:
    """The console line that best says why a kernel died. After a panic: the line before it
    when that one names a failure (userspace()'s `... failed, errno = N`, which the panic
    only follows), else the panic's own line. Without one: the first telling line after init
    was started (or anywhere, if it never was), else the last line printed."""
    lines = [line.strip() for line in console.replace("\r", "").splitlines() if line.strip()]
    panic = next((i for i, line in enumerate(lines) if line.startswith("Kernel panic")), None)
    if panic is not None:
        if panic > 0 and _FAILURE.search(lines[panic - 1]):
            return lines[panic - 1]
        return lines[panic]
    started = max((i for i, line in enumerate(lines) if line.startswith("Run /")), default=-1)
    for pattern in _DEATH_PATTERNS:
        for candidates in (lines[started + 1:], lines):
            for line in candidates:
                if pattern.search(line) and not line.startswith(("Kernel command line",
                                                                   INIT_MARK, EXIT_MARK)):
                    return line
    return lines[-1] if lines else "(nothing on the console)"


_preflight_lock = threading.Lock()
_preflight: dict[tuple[str, str | None], XstateFix | KernelUnavailable] = {}


def require_kernel(mode: str | None = None) -> XstateFix:
    """Check once per process (per XSAVE-fix mode and linux.uml found on PATH) that linux.uml
    can run here: installed, ptrace allowed, the fix built where it is needed. Raises
    KernelUnavailable."""
    binary = shutil.which(BINARY)
    key = (chosen_mode(mode), binary)
    with _preflight_lock:
        if key not in _preflight:
            try:
                if binary is None:
                    raise KernelUnavailable(f"{BINARY} is not installed (Debian's "
                                            "user-mode-linux package; `make setup` installs it)")
                _preflight[key] = decide(mode)
            except KernelUnavailable as err:
                _preflight[key] = err
        found = _preflight[key]
    if isinstance(found, KernelUnavailable):
        raise KernelUnavailable(str(found))
    return found


def _live_members(pgid: int) -> list[int]:
    """Pids of the process group that are not yet zombies (from /proc/PID/stat)."""
    live = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                live.append(int(entry.name))
    return live


class RunningKernel:
    """A boot in progress (start()); wait() ends it and gives the KernelRun. As a context
    manager it kills a boot that is still running on exit."""

    def __init__(self, proc: subprocess.Popen, private: Path, fix: XstateFix, timeout: float):
        self._proc = proc
        self._private = private
        self._fix = fix
        self._timeout = timeout
        self._started = time.monotonic()
        self._result: KernelRun | None = None

    @property
    def pid(self) -> int:
        """linux.uml's own pid (prefix commands exec into it): the holder of its host locks."""
        return self._proc.pid

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self) -> KernelRun:
        """Wait for the boot to end, at most until its timeout; raises KernelUnavailable when
        the kernel died before its init started."""
        if self._result is None:
            left = self._timeout - (time.monotonic() - self._started)
            try:
                returncode: int | None = self._proc.wait(timeout=max(left, 0))
            except subprocess.TimeoutExpired:
                returncode = None
            self._end_group()
            self._result = self._collect(returncode)
        if INIT_MARK not in self._result.console:
            if self._result.timed_out:
                raise KernelUnavailable(f"{BINARY} did not reach init within "
                                        f"{self._timeout:g} s")
            raise KernelUnavailable(f"{BINARY} died before the guest's init ran "
                                    f"({_how(self._result.returncode)}): "
                                    f"{death_line(self._result.console)}")
        return self._result

    def _end_group(self) -> None:
        """Kill what is left of the boot's process group and wait until none of it runs:
        linux.uml's children are reparented when it dies and take a moment to go."""
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait()
        deadline = time.monotonic() + GROUP_EXIT_SECONDS
        while _live_members(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _collect(self, returncode: int | None) -> KernelRun:
        def read(name: str) -> bytes:
            try:
                return (self._private / name).read_bytes()
            except OSError:
                return b""

        console, output, errors = read("console"), read("out"), read("err")
        shutil.rmtree(self._private, ignore_errors=True)
        found = _EXIT_LINE.search(console.decode("utf-8", "replace"))
        return KernelRun(console_bytes=console, output_bytes=output, error_bytes=errors,
                         status=int(found.group(1)) if found else None, returncode=returncode,
                         seconds=time.monotonic() - self._started, timeout=self._timeout,
                         fix=self._fix)

    def __enter__(self) -> RunningKernel:
        return self

    def __exit__(self, *exc) -> None:
        if self._result is None:
            self._end_group()
            self._result = self._collect(self._proc.returncode)


def start(options: Sequence[str], command: Sequence[str] | None = None, *,
          script: str | None = None, cwd: os.PathLike | str, mem: str = DEFAULT_MEM,
          timeout: float = DEFAULT_TIMEOUT, merge_stderr: bool = False,
          prefix: Sequence[str] = (), user: str | None = None,
          xstate_fix: str | None = None, preload: Sequence[os.PathLike | str] = (),
          env: Mapping[str, str] | None = None) -> RunningKernel:
    """Boot linux.uml with the kernel `options` in `cwd` and run the guest `command` (argv, run
    in `cwd` as `ubdsim run` would run it) or the sh `script` text there.

    `prefix` goes before the kernel (e.g. a private mount namespace); `user` runs the kernel
    as that host user; `xstate_fix` overrides $UBDSIM_XSTATE_FIX (auto, on, off); `preload`
    adds LD_PRELOAD libraries (after the XSAVE fix when it is applied, before any inherited
    $LD_PRELOAD) and `env` variables to linux.uml's environment (for the host process only:
    the guest's environment is the generated init's)."""
    if (command is None) == (script is None):
        raise ValueError("give exactly one of command and script")
    fix = require_kernel(xstate_fix)
    private = Path(tempfile.mkdtemp(prefix="kref-"))
    try:
        if script is not None:
            (private / "script.sh").write_text(script)
            command = ["/bin/sh", str(private / "script.sh")]
        (private / "uml").mkdir()
        init = private / "init"
        err = "&1" if merge_stderr else shlex.quote(str(private / "err"))
        init.write_text(_INIT.format(init_mark=INIT_MARK, exit_mark=EXIT_MARK,
                                     cwd=shlex.quote(str(Path(cwd).resolve())),
                                     command=shlex.join(command),
                                     out=shlex.quote(str(private / "out")), err=err))
        init.chmod(0o755)
        if user is not None:
            give_to(private, user)
            # the preloaded libraries (the XSAVE fix first) must be reachable by that user
            for library in ([FIX_LIBRARY] if fix.applied else []) + [Path(p) for p in preload]:
                make_reachable(library)
        console = private / "console"
        argv = [*prefix, *run_as_prefix(user), BINARY, f"mem={mem}", "root=/dev/root",
                "rootfstype=hostfs", "rootflags=/", "rw", f"init={init}", "con=null",
                "con0=fd:0,fd:1", f"uml_dir={private / 'uml'}", *options]
        with open(console, "wb") as sink:
            proc = subprocess.Popen([os.fsencode(a) for a in argv], cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=_environment(fix, preload, env))
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    return RunningKernel(proc, private, fix, timeout)


def _environment(fix: XstateFix, preload: Sequence[os.PathLike | str],
                 env: Mapping[str, str] | None) -> dict[str, str]:
    """linux.uml's environment: ours and `env`, with LD_PRELOAD = the XSAVE fix where it is
    applied (as XstateFix.environment() puts it), then the `preload` libraries, then any
    LD_PRELOAD already there."""
    environment = {**os.environ, **(env or {})}
    libraries = [str(FIX_LIBRARY)] if fix.applied else []
    libraries += [os.fspath(library) for library in preload]
    if environment.get("LD_PRELOAD"):
        libraries.append(environment["LD_PRELOAD"])
    if libraries:
        environment["LD_PRELOAD"] = ":".join(libraries)
    return environment


def boot(options: Sequence[str], command: Sequence[str] | None = None, **kwargs) -> KernelRun:
    """start(), then wait() for the end of the boot."""
    with start(options, command, **kwargs) as running:
        return running.wait()
