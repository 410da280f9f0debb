"""The row every scripts/bench_*.py prints with --json, and the host line of the bench table.

A row is one figure measured side by side with its anchor (the real kernel, uml_moo,
qemu-nbd, plain host I/O, or a goal where nothing else does the job):
    {"figure", "unit", "ours", "anchor", "anchor_name", "ratio", "better"}
`ratio` is always ours / anchor; `better` says which way is good ("lower" for times and
memory, "higher" for rates), so a table can say whether each ratio is a win.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile


def row(figure: str, unit: str, ours: float, anchor: float | None, anchor_name: str,
        better: str) -> dict:
    """One figure; the ratio is None where there is no anchor (or it is zero)."""
    assert better in ("higher", "lower")
    ratio = round(ours / anchor, 4) if anchor else None
    return {"figure": figure, "unit": unit, "ours": ours, "anchor": anchor,
            "anchor_name": anchor_name, "ratio": ratio, "better": better}


def print_rows(rows: list[dict]) -> None:
    """The --json output: the rows as one JSON list on stdout."""
    print(json.dumps(rows))


def cpu_line() -> str:
    """The host's CPU model, count and whether it has AMX (the XSAVE size that matters)."""
    model = platform.processor() or "unknown CPU"
    amx = False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown CPU", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    amx = "amx_tile" in line.split()
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, AMX {'yes' if amx else 'no'}"


def load_line() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def ubdsim_env(root: str) -> dict[str, str]:
    """The environment to time `python -m ubdsim` in: with a bytecode cache.

    An installed Python tool starts from compiled bytecode; with PYTHONDONTWRITEBYTECODE set
    (this sandbox sets it) every start compiles ubdsim's ~150 modules again, 0.1-0.3 s that
    no real run pays. The cache goes outside the tree (PYTHONPYCACHEPREFIX): ubdsim compiled,
    then each timed command started once (which caches what it imports: numpy and the rest)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "ubdsim-bench-pycache")
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(root, "ubdsim")],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    for command in ("moo", "info", "map", "check"):      # numpy & co. go into the cache too
        subprocess.run([sys.executable, "-m", "ubdsim", command, "--help"], cwd=root, env=env,
                       check=True, stdout=subprocess.DEVNULL)
    return env
