"""The repro runner's guest steps under linux.uml (the 6.1 oracle), through the one launcher.

A guest's output is what `ubdsim run` prints for it: the ubd driver's console lines (and the
block layer's I/O error lines, which the lost-write scenario is about), then the command's
own stdout and stderr."""
from __future__ import annotations

from pathlib import Path

from kernel_ref import launcher
from kernel_ref.filters import ubd_lines
from ubdsim.repro.model import Guest
from ubdsim.repro.runner import expand


def _console_lines(console: str) -> list[str]:
    block = [line for line in console.splitlines() if "Buffer I/O error" in line]
    return ubd_lines(console) + block


class _Boot:
    def __init__(self, running: launcher.RunningKernel) -> None:
        self._running = running
        self._result: tuple[int | None, str] | None = None

    def poll(self) -> bool:
        return self._running.poll() is not None

    def wait(self) -> tuple[int | None, str]:
        if self._result is None:
            run = self._running.wait()
            text = "".join(f"{line}\n" for line in _console_lines(run.console)) + run.output
            self._result = (run.status, text if run.status is not None else text + run.problem)
        return self._result

    def kill(self) -> None:
        self._running.__exit__(None, None, None)


class LinuxUmlBackend:
    name = "linux.uml"

    def command(self, guest: Guest, profile: str) -> str:
        return f"linux.uml {' '.join(guest.options)} (guest: {expand(guest.script, profile)})"

    def start(self, guest: Guest, profile: str, cwd: Path) -> _Boot:
        assert profile == "6.1", "linux.uml is the 6.1 oracle only"
        return _Boot(launcher.start(list(guest.options), ["sh", "-c", expand(guest.script, profile)],
                                    cwd=cwd, merge_stderr=True, timeout=90))
