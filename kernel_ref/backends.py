"""The two ways to run a boot: the real linux.uml (the oracle) and `ubdsim run --kernel 6.1`.

Both get the same working directory, the same ubd options and the same guest script, and
both return a BootResult: the driver's log lines (filtered, not yet normalised), the guest
script's stdout lines and its exit status.

linux.uml: booted by kernel_ref/launcher.py, which runs the guest script in the working
directory and reads its stdout and exit status back. Kernel messages come from the console.
ubdsim: `ubdsim run --kernel 6.1 --log LOG OPTIONS -- /bin/sh SCRIPT`; its --log file holds
the kernel messages alone and its exit status is the guest's.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import launcher
from .filters import ubd_lines
from .host import run_as_prefix

BOOT_TIMEOUT = 60    # seconds; a boot normally takes about 1.5 s


@dataclass
class BootResult:
    log: list[str]
    out: list[str]
    status: int | None
    problem: str = ""                       # why the backend could not give a status

    def to_json(self) -> dict:
        return {"log": self.log, "out": self.out, "status": self.status}


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine (missing binary, command not implemented)."""


def _ubdsim_command() -> list[str]:
    exe = Path(sys.executable).with_name("ubdsim")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ubdsim"]


def run_bounded(cmd: list[str], cwd: Path, merge_stderr: bool) -> tuple[int | None, bytes, bytes]:
    """Run a backend in its own session; past BOOT_TIMEOUT kill its whole process group
    (linux.uml forks helper processes that outlive a killed parent). None = killed."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=BOOT_TIMEOUT)
        return proc.returncode, stdout, stderr or b""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return None, stdout, stderr or b""


class UmlBackend:
    """linux.uml 6.1 from Debian's user-mode-linux package: the judge for profile 6.1."""

    name = "linux.uml"

    def check(self) -> None:
        """Raises KernelUnavailable (one line) when linux.uml cannot run here."""
        launcher.require_kernel()

    def version(self) -> str:
        """The kernel release, from the binary's own version string."""
        data = Path(shutil.which(launcher.BINARY)).read_bytes()
        match = re.search(rb"Linux version (\S+)", data)
        return match.group(1).decode() if match else "unknown"

    def boot(self, work: Path, scratch: Path, index: int, options: list[str], script: Path,
             run_as: str | None) -> BootResult:
        run = launcher.boot(options, ["/bin/sh", str(script)], cwd=work, user=run_as,
                            timeout=BOOT_TIMEOUT)
        (scratch / f"uml-{index}.console").write_text(run.console)    # for --keep readers
        return BootResult(log=ubd_lines(run.console), out=run.output.splitlines(),
                          status=run.status, problem=run.problem)


class UbdsimBackend:
    """`ubdsim run --kernel 6.1`: the simulator under test."""

    name = "ubdsim"

    def __init__(self, profile: str = "6.1"):
        self.profile = profile

    def check(self) -> None:
        import importlib.util
        if importlib.util.find_spec("ubdsim.cli.run") is None:
            raise BackendUnavailable("ubdsim has no `run` command yet (ubdsim/cli/run.py missing)")

    def boot(self, work: Path, scratch: Path, index: int, options: list[str], script: Path,
             run_as: str | None) -> BootResult:
        log = scratch / f"ubdsim-{index}.log"
        log.unlink(missing_ok=True)
        cmd = [*run_as_prefix(run_as), *_ubdsim_command(), "run", "--kernel", self.profile,
               "--log", str(log), *options, "--", "/bin/sh", str(script)]
        returncode, stdout, stderr = run_bounded(cmd, work, merge_stderr=False)
        text = log.read_text(errors="replace") if log.exists() else ""
        problem = ""
        if not log.exists():
            problem = (f"ubdsim run wrote no --log file (exit {returncode}); stderr:\n"
                       + stderr.decode(errors="replace")[-2000:])
        # Every line of ubdsim's log counts (it holds kernel messages alone): a message the
        # kernel never prints must show up as a difference, not vanish in a filter.
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        if returncode is None:
            problem = f"ubdsim run did not finish within {BOOT_TIMEOUT} s (killed)"
        return BootResult(log=lines, out=stdout.decode(errors="replace").splitlines(),
                          status=returncode, problem=problem)


BACKENDS = {"linux.uml": UmlBackend, "ubdsim": UbdsimBackend}
