"""Running scenarios on the backends and judging them (gVisor's "native vs runsc" idea).

A scenario runs in `<root>/<name>/work`, first on one backend, then (after the first run's
files are moved aside) on the other in the SAME directory, so absolute paths stored in COW
headers and printed in messages are identical on both sides. Two scenarios run at a time.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import fixtures, golden, host
from .backends import BackendUnavailable, UbdsimBackend, UmlBackend
from .compare import Outcome, compare
from .filters import Normaliser
from .guest import READ_FILE, SCRATCH, compile_boot
from .observe import snapshot_dir

PARALLEL = 2


def run_on(backend: UmlBackend | UbdsimBackend, scn: dict, work: Path, now: float) -> Outcome:
    """Prepare the scenario's files in `work` and run all its boots on `backend`."""
    backend.check()
    if work.exists():
        shutil.rmtree(work)
    scratch = work / SCRATCH
    scratch.mkdir(parents=True)
    fixtures.prepare(work, scn["files"])
    pids: dict[int, str] = {}
    boots, problems = [], []
    for index, boot in enumerate(scn["boots"], 1):
        for step in boot["host"]:
            host.apply(work, step)
        script_text, patterns = compile_boot(work, index, boot["guest"])
        for rel, data in patterns.items():
            (work / rel).write_bytes(data)
        script = scratch / f"guest-{index}.sh"
        script.write_text(script_text)
        script.chmod(0o755)
        run_as = boot.get("run_as")
        if run_as:
            host.give_to(work, run_as)
        # "$WORK" in an option stands for the working directory (absolute-path scenarios).
        options = [o.replace("$WORK", str(work)) for o in boot.get("options", scn["options"])]
        with host.held(work, boot) as locker_pids:
            pids.update(locker_pids)
            result = backend.boot(work, scratch, index, options, script, run_as)
        norm = Normaliser(str(work), pids, now)
        if result.problem:
            problems.append(f"boot {index}: {result.problem}")
        boots.append({"log": norm.lines(result.log), "out": norm.lines(result.out),
                      "status": result.status})
    files = snapshot_dir(work, Normaliser(str(work), pids, now), SCRATCH)
    reads = {}
    for index, boot in enumerate(scn["boots"], 1):
        for step in range(1, len(boot["guest"]) + 1):
            path = work / READ_FILE.format(boot=index, step=step)
            if path.exists():
                reads[(index, step)] = path.read_bytes()
    return Outcome(source=backend.name, boots=boots, files=files, problems=problems, reads=reads)


@dataclass
class Verdict:
    name: str
    agree: bool
    diffs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def judge(scn: dict, root: Path, mode: str) -> Verdict:
    """Run one scenario in `mode` and compare.

    modes: "live"   linux.uml vs ubdsim (and linux.uml vs its golden, reported as a note);
           "golden" recorded kernel vs ubdsim (no linux.uml);
           "oracle" linux.uml vs its golden capture (no ubdsim): has the kernel changed?
    """
    start = time.monotonic()
    name = scn["name"]
    base = root / name
    work = base / "work"
    now = time.time()
    notes: list[str] = []
    recorded = golden.load(name)
    try:
        if mode in ("live", "oracle"):
            kernel = run_on(UmlBackend(), scn, work, now)
            _keep(work, base / "linux.uml")
        else:
            if recorded is None:
                return Verdict(name, False, [f"no golden capture: run `{golden.REGENERATE.format(name=name)}`"])
            kernel = recorded
        if mode == "oracle":
            if recorded is None:
                diffs = [f"no golden capture: run `{golden.REGENERATE.format(name=name)}`"]
            else:
                diffs = compare(recorded, kernel)
        else:
            if mode == "live" and recorded is not None:
                drift = compare(recorded, kernel)
                if drift:
                    notes.append("linux.uml differs from its golden capture "
                                 "(kernel package or host filesystem changed?):\n" + "\n".join(drift))
            sim = run_on(UbdsimBackend(), scn, work, now)
            _keep(work, base / "ubdsim")
            diffs = compare(kernel, sim)
    except BackendUnavailable as err:
        diffs = [str(err)]
    return Verdict(name, not diffs, diffs, notes, time.monotonic() - start)


def _keep(work: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    work.rename(dest)


def capture(scn: dict, root: Path) -> tuple[str, Path]:
    """Run on linux.uml only and write the golden file."""
    uml = UmlBackend()
    outcome = run_on(uml, scn, root / scn["name"] / "work", time.time())
    if outcome.problems:
        raise RuntimeError(f"{scn['name']}: linux.uml did not complete: {outcome.problems}")
    return scn["name"], golden.save(scn["name"], outcome, uml.version())


def run_many(scenarios: list[dict], mode: str, keep: Path | None, report) -> list[Verdict]:
    """Judge scenarios two at a time; `report(verdict)` is called in scenario order."""
    if mode in ("live", "oracle"):
        UmlBackend().check()        # no oracle, no verdicts: fail loudly, never skip
    root = keep or Path(tempfile.mkdtemp(prefix="kernel_ref-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            futures = [pool.submit(judge, scn, root, mode) for scn in scenarios]
            verdicts = []
            for future in futures:
                verdict = future.result()
                report(verdict)
                verdicts.append(verdict)
        return verdicts
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
