"""Golden captures: the kernel's outcome of each scenario, recorded from linux.uml only.

One gzip'd JSON file per scenario in kernel_ref/golden/ holds the normalised log lines, guest
transcripts, exit statuses and every file's length, holes and allocated bytes (zlib). They
let a run compare ubdsim against the recorded kernel without booting it, and compare the
live kernel against the recording: a live-vs-golden difference means the kernel package
changed (or the host's filesystem behaves differently), not ubdsim.
Regenerate with: python -m kernel_ref capture --all   (or capture NAME...).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from .compare import Outcome

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
REGENERATE = "python -m kernel_ref capture {name}"


def path_for(name: str) -> Path:
    return GOLDEN_DIR / f"{name}.json.gz"


def save(name: str, outcome: Outcome, kernel_version: str) -> Path:
    data = {"scenario": name, "regenerate": REGENERATE.format(name=name),
            "kernel": kernel_version, **outcome.to_json()}
    path = path_for(name)
    text = json.dumps(data, indent=1, sort_keys=True).encode()
    # mtime=0: the same capture gives the same bytes, so an unchanged golden stays unchanged.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(text)
    return path


def load(name: str) -> Outcome | None:
    path = path_for(name)
    if not path.exists():
        return None
    with gzip.open(path, "rt") as f:
        data = json.load(f)
    return Outcome.from_json(f"golden ({data.get('kernel', '?')})", data)
