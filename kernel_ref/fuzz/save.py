"""Writing a shrunk disagreement as a kernel_ref scenario with the kernel's golden capture.

Why: a disagreement the fuzzer found once must stay found. The minimal program becomes
scenario data in the format of kernel_ref/scenarios/*.py (a module defining SCENARIOS: name,
about, files as kernel_ref/steps.py spells them, options, boots) whose one guest step is the
fuzz step (step.py), and linux.uml's outcome of it (already normalised: $WORK, masks) is
written in golden.py's format (gzip'd JSON, mtime 0). Written only when asked
(--save-scenarios DIR), so routine runs add no files.

Where the golden goes: kernel_ref/golden/ when DIR is kernel_ref/scenarios itself (where
golden.load() looks), else DIR/golden/. `python -m kernel_ref fuzz --replay DIR` runs such
scenarios on both backends and checks linux.uml against the capture; the main suite
(`kernel_ref run`) runs them once kernel_ref/guest.py compiles the fuzz step with
step.compile_step().
"""
from __future__ import annotations

import gzip
import json
import pprint
from pathlib import Path

from .. import golden
from .. import scenarios as _scenarios
from ..compare import Outcome
from .batch import safe_name
from .shrink import Shrunk

REPLAY = "python -m kernel_ref fuzz --replay {dir}"
RECAPTURE = REPLAY + " --capture"


def is_suite(target: Path) -> bool:
    return target.resolve() == Path(_scenarios.__path__[0]).resolve()


def golden_dir(target: Path) -> Path:
    if is_suite(target):
        return golden.GOLDEN_DIR
    return target / "golden"


def save_golden(directory: Path, name: str, outcome: Outcome, kernel: str, target: Path) -> Path:
    """golden.save()'s format, in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {"scenario": name, "regenerate": RECAPTURE.format(dir=target),
            "kernel": kernel, **outcome.to_json()}
    path = directory / f"{name}.json.gz"
    text = json.dumps(data, indent=1, sort_keys=True).encode()
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text)
    return path


def scenario_name(shrunk: Shrunk) -> str:
    return "fuzz-" + safe_name(shrunk.original.program.name)


def write(target: Path, shrunk: Shrunk, kernel: str, command: str) -> tuple[Path, Path]:
    """The scenario module and its golden capture; returns both paths."""
    target.mkdir(parents=True, exist_ok=True)
    name = scenario_name(shrunk)
    minimal = shrunk.minimal
    about = f"fuzz {shrunk.original.program.name}: {shrunk.target} ({minimal.program.operations} ops)"
    scn = minimal.program.to_scenario(name, about)
    first = minimal.diffs[0].split("\n")[:8] if minimal.diffs else []
    doc = [f"A disagreement found by `{command}` (program {shrunk.original.program.name}),",
           f"shrunk from {shrunk.original.program.operations} to "
           f"{minimal.program.operations} operations in {shrunk.runs} runs: {shrunk.target}.",
           "",
           "linux.uml's outcome is the golden capture next to it; replay both backends with",
           f"`{REPLAY.format(dir=target)}`.",
           "",
           "The difference when it was saved:"] + ["    " + line for line in first]
    module = target / f"{name.replace('-', '_')}.py"
    text = '"""' + "\n".join(doc).replace('"""', "'''").replace("\\", "\\\\") + '\n"""\n\n'
    text += "SCENARIOS = " + pprint.pformat([scn], width=96, sort_dicts=False) + "\n"
    module.write_text(text)
    path = save_golden(golden_dir(target), name, minimal.expected, kernel, target)
    return module, path
