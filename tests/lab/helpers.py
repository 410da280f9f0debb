"""Running ubdsim for the lab tests: the command line as a user types it, in a work dir.

The guest of `ubdsim run` inherits the environment, so `python -m ubdsim mark` inside it is
this tree's ubdsim too (PYTHONPATH names the tree the tests come from)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
UBDSIM = [sys.executable, "-m", "ubdsim"]
MARK = f"{sys.executable} -m ubdsim mark"


def ubdsim(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*UBDSIM, *args], cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def record(cwd: Path, log: str, words: list[str], script: str, *, kernel: str = "6.1",
           extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """`ubdsim run --kernel K --record LOG [extra] WORDS -- sh -c SCRIPT` (set -e)."""
    return ubdsim(cwd, "run", "--kernel", kernel, "--record", log, *(extra or []), *words,
                  "--", "sh", "-c", "set -e\n" + script)


def crash_json(cwd: Path, *args: str) -> tuple[int, dict]:
    done = ubdsim(cwd, "crash", *args, "--json")
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
