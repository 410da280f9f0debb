"""Running a scenario: the damage in one fresh directory, the safe way in another.

Each phase (damage, safe) gets its own directory and runs the scenario's setup steps there
first, so the safe way starts from the same files the damage did. Host steps run as `sh -c`
in that directory; guest steps go to a GuestBackend (`ubdsim run` by default; the tests give
a linux.uml one). Every step's status and output are kept and judged against what the step
says it must show; nothing is retried and no time is measured, so a verdict only depends on
what the tools printed and returned.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Protocol

from .model import Guest, Scenario, Step

STEP_TIMEOUT = 120.0          # seconds a step may take before it is killed (a hung guest)
READY_TIMEOUT = 60.0          # seconds a background guest may take to open its device
UBDSIM = f"{shlex.quote(sys.executable)} -m ubdsim"


def device_node(profile: str) -> str:
    """The node a guest of this profile names its first unit by (both work under ubdsim;
    linux.uml's devtmpfs has only /dev/ubda)."""
    return "/dev/ubda" if profile == "6.1" else "/dev/ubd0"


def expand(text: str, profile: str) -> str:
    for key, value in (("{ubdsim}", UBDSIM), ("{python}", shlex.quote(sys.executable)),
                       ("{dev}", device_node(profile)), ("{kernel}", profile)):
        text = text.replace(key, value)
    return text


def environment() -> dict[str, str]:
    """The steps' environment: ours, this tree's ubdsim first on the path, C messages."""
    import ubdsim
    tree = str(Path(ubdsim.__file__).parent.parent)
    path = os.pathsep.join(p for p in (tree, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, LC_ALL="C")


class GuestRun(Protocol):
    def poll(self) -> bool: ...               # True once it has ended
    def wait(self) -> tuple[int | None, str]: ...   # status (None: did not finish), output
    def kill(self) -> None: ...


class GuestBackend(Protocol):
    name: str

    def command(self, guest: Guest, profile: str) -> str: ...
    def start(self, guest: Guest, profile: str, cwd: Path) -> GuestRun: ...


class _Process:
    """A process in its own session, its output (stdout and stderr) in an unnamed file."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self._sink: IO[bytes] = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(argv, cwd=cwd, env=environment(), stdin=subprocess.DEVNULL,
                                      stdout=self._sink, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self._result: tuple[int | None, str] | None = None

    def poll(self) -> bool:
        return self._proc.poll() is not None

    def wait(self) -> tuple[int | None, str]:
        if self._result is not None:
            return self._result
        try:
            status: int | None = self._proc.wait(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            status = None
        self._sink.seek(0)
        text = self._sink.read().decode("utf-8", "replace")
        self._sink.close()
        if status is not None and status < 0:
            status = 128 - status
        self._result = (status, text)
        return self._result

    def kill(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait()


class UbdsimBackend:
    """Guest steps as `ubdsim run --kernel P WORDS -- sh -c SCRIPT`."""
    name = "ubdsim"

    def _argv(self, guest: Guest, profile: str) -> list[str]:
        return [sys.executable, "-m", "ubdsim", "run", "--kernel", profile, *guest.options, "--",
                "sh", "-c", expand(guest.script, profile)]

    def command(self, guest: Guest, profile: str) -> str:
        argv = self._argv(guest, profile)
        return shlex.join(["ubdsim", *argv[3:]])

    def start(self, guest: Guest, profile: str, cwd: Path) -> GuestRun:
        return _Process(self._argv(guest, profile), cwd)


@dataclass
class StepResult:
    phase: str                    # setup, damage or safe
    say: str
    kind: str                     # host, guest or join
    command: str
    status: int | None
    output: str
    expected: list[int] | None
    met: bool
    differed: str                 # what was not as the step says ("" when met)
    same: bool


@dataclass
class Report:
    scenario: str
    title: str
    profile: str
    backend: str
    directory: str
    kept: bool
    explanation: str
    steps: list[StepResult] = field(default_factory=list)

    def _met(self, phase: str) -> bool:
        return all(s.met for s in self.steps if s.phase == phase)

    @property
    def setup_ok(self) -> bool:
        return self._met("setup")

    @property
    def reproduced(self) -> bool:
        return self.setup_ok and self._met("damage")

    @property
    def safe_clean(self) -> bool:
        return self.setup_ok and self._met("safe")

    @property
    def ok(self) -> bool:
        return self.reproduced and self.safe_clean

    def differences(self) -> list[str]:
        return [f"{s.phase}: {s.say}: {s.differed}" for s in self.steps if not s.met]

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(setup_ok=self.setup_ok, reproduced=self.reproduced,
                    safe_clean=self.safe_clean, verdict="reproduced" if self.ok else "not reproduced",
                    differences=self.differences())
        return data


def _judge(step: Step, status: int | None, output: str) -> str:
    if status is None:
        return f"did not finish within {STEP_TIMEOUT:g} s (killed)"
    if step.expect is not None and status not in step.expect:
        want = " or ".join(map(str, step.expect))
        return f"exit status {status}, expected {want}"
    missing = [text for text in step.shows if text not in output]
    if missing:
        return "output lacks " + ", ".join(repr(t) for t in missing)
    extra = [text for text in step.hides if text in output]
    if extra:
        return "output shows " + ", ".join(repr(t) for t in extra)
    return ""


class _Phase:
    """One phase's directory, its background guests, and the results so far."""

    def __init__(self, report: Report, name: str, cwd: Path, backend: GuestBackend) -> None:
        self.report, self.name, self.cwd, self.backend = report, name, cwd, backend
        self.background: dict[str, GuestRun] = {}

    def step(self, step: Step) -> bool:
        profile = self.report.profile
        if step.guest is not None:
            command = self.backend.command(step.guest, profile)
            run = self.backend.start(step.guest, profile, self.cwd)
            if step.guest.background:
                self.background[step.guest.background] = run
                status, output = self._ready(step.guest, run)
            else:
                status, output = run.wait()
        elif step.join is not None:
            command = f"(wait for the guest '{step.join}')"
            run_ = self.background.pop(step.join, None)
            status, output = run_.wait() if run_ else (None, f"no guest named {step.join!r}")
        else:
            command = expand(step.run, profile)
            status, output = _Process(["sh", "-c", command], self.cwd).wait()
        differed = _judge(step, status, output)
        self.report.steps.append(StepResult(
            self.name, step.say, step.kind, command, status,
            output, list(step.expect) if step.expect is not None else None, not differed,
            differed, step.same))
        return not differed

    def _ready(self, guest: Guest, run: GuestRun) -> tuple[int | None, str]:
        """A background guest's step is met once its ready file exists (status 0)."""
        ready = self.cwd / (guest.ready or "ready")
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists() and not run.poll() and time.monotonic() < deadline:
            time.sleep(0.05)
        if ready.exists():
            return 0, f"(running in the background; {ready.name} exists)"
        if run.poll():
            status, output = run.wait()
            return (status if status else 1), output
        return None, "(never became ready)"

    def end(self) -> None:
        for run in self.background.values():
            run.kill()
        self.background.clear()


def run_scenario(scenario: Scenario, profile: str, backend: GuestBackend | None = None,
                 keep: Path | None = None) -> Report:
    """Run the damage, then the safe way, each in a fresh directory (under `keep`, left there,
    or in a temporary directory that is removed)."""
    backend = backend or UbdsimBackend()
    root = keep if keep is not None else Path(tempfile.mkdtemp(prefix=f"repro-{scenario.name}-"))
    report = Report(scenario.name, scenario.title, profile, backend.name, str(root),
                    keep is not None, scenario.explanation(profile))
    try:
        for phase, steps in (("damage", scenario.damage), ("safe", scenario.safe)):
            cwd = root / phase
            cwd.mkdir(parents=True)
            _run_phase(report, scenario, phase, steps, cwd, backend)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _run_phase(report: Report, scenario: Scenario, phase: str, steps: tuple[Step, ...],
               cwd: Path, backend: GuestBackend) -> None:
    setup = _Phase(report, "setup", cwd, backend)
    work = _Phase(report, phase, cwd, backend)
    try:
        for step in scenario.setup:
            if step.applies(report.profile) and not setup.step(step):
                return                       # the damage needs its files: stop this phase
        for step in steps:
            if step.applies(report.profile):
                work.step(step)
    finally:
        setup.end()
        work.end()
        for command in scenario.cleanup:
            _Process(["sh", "-c", expand(command, report.profile)], cwd).wait()
