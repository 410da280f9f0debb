"""Replaying saved fuzz scenarios: linux.uml vs ubdsim, and linux.uml vs its golden capture.

Why here and not in kernel_ref/run.py: a saved fuzz scenario's guest step is the fuzz step,
which kernel_ref/guest.py does not compile (yet); execute.run_scenario() does. The verdicts
are run.py's Verdict, judged as `kernel_ref run` judges (live mode): a ubdsim difference is a
disagreement, a linux.uml-vs-golden difference a note that the kernel package (or the host)
changed. With capture=True the golden captures are rewritten from linux.uml only.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..backends import UmlBackend
from ..compare import Outcome, compare
from ..run import PARALLEL, Verdict
from ..scenario import _check
from .execute import kernel_side, run_scenario, ubdsim_side
from .save import golden_dir, save_golden
from .verdict import explain_reads


def load(directory: Path) -> list[dict]:
    """Every scenario of every module in `directory` (sorted by file name)."""
    found: list[dict] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"kernel_ref_fuzz_saved_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for scn in module.SCENARIOS:
            found.append(_check(dict(scn), str(path)))
    return found


def _recorded(directory: Path, name: str) -> Outcome | None:
    path = golden_dir(directory) / f"{name}.json.gz"
    if not path.exists():
        return None
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    return Outcome.from_json(f"golden ({data.get('kernel', '?')})", data)


def _one(directory: Path, scn: dict, root: Path, capture: bool, ubdsim_profile: str) -> Verdict:
    start = time.monotonic()
    name = scn["name"]
    work = root / name / "work"
    now = time.time()
    kernel = run_scenario(kernel_side(), scn, work, now)
    if capture:
        if kernel.problems:
            return Verdict(name, False, [f"linux.uml did not complete: {kernel.problems}"])
        path = save_golden(golden_dir(directory), name, kernel, UmlBackend().version(), directory)
        return Verdict(name, True, [], [f"captured -> {path}"], time.monotonic() - start)
    notes: list[str] = []
    recorded = _recorded(directory, name)
    if recorded is None:
        notes.append(f"no golden capture in {golden_dir(directory)}")
    else:
        drift = compare(recorded, kernel)
        if drift:
            notes.append("linux.uml differs from its golden capture "
                         "(kernel package or host filesystem changed?):\n" + "\n".join(drift))
    sim = run_scenario(ubdsim_side(ubdsim_profile), scn, work, now)
    diffs = compare(kernel, sim)
    if diffs:
        diffs += explain_reads(kernel, sim)
    return Verdict(name, not diffs, diffs, notes, time.monotonic() - start)


def replay(directory: Path, capture: bool, report: Callable[[Verdict], None],
           ubdsim_profile: str = "6.1") -> list[Verdict]:
    UmlBackend().check()
    scenarios = load(directory)
    root = Path(tempfile.mkdtemp(prefix="kernel_ref-replay-"))
    try:
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            futures = [pool.submit(_one, directory, scn, root, capture, ubdsim_profile)
                       for scn in scenarios]
            verdicts = []
            for future in futures:
                verdict = future.result()
                report(verdict)
                verdicts.append(verdict)
        return verdicts
    finally:
        shutil.rmtree(root, ignore_errors=True)
