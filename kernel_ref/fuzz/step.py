"""The fuzz guest step: scenario data that runs guest_runner.py, and the sh lines it becomes.

Why a step of its own: a fuzz program's operations (pread64 at byte offsets, vectored I/O,
lseek, fadvise, fallocate, block ioctls) cannot be spelled with kernel_ref/guest.py's dd
steps, so a saved disagreement carries them as ONE guest step `{"op": "fuzz", "ops": [...]}`
holding the runner's operations with byte offsets already resolved. compile_step() gives the
sh lines of that step in the exact shape guest.py gives its own steps (the same script
header, `<n> fuzz rc=<status>` through guest._status(), counted in `fails`); guest.compile_boot()
calls it for `fuzz` steps, so a saved disagreement is an ordinary kernel_ref scenario that
`python -m kernel_ref run --all` runs with the others.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..guest import SCRATCH, _status

RUNNER = Path(__file__).resolve().with_name("guest_runner.py")
# The guest's interpreter: Debian's, on the host's / that linux.uml mounts through hostfs and
# that `ubdsim run` runs directly; -I -S -B: no site, no user paths, no .pyc written.
PYTHON = "/usr/bin/python3"
PROGRAM_FILE = SCRATCH + "/fuzz-{boot}-{step}.json"


def fuzz_step(ops: list[dict]) -> dict:
    """A guest step running `ops` (runner operations, see guest_runner.py) in one process."""
    return {"op": "fuzz", "ops": [dict(op) for op in ops]}


def compile_step(boot_index: int, n: int, step: dict) -> tuple[list[str], dict[str, bytes]]:
    """The sh lines of guest step `n` of boot `boot_index`, and the file they need."""
    rel = PROGRAM_FILE.format(boot=boot_index, step=n)
    data = json.dumps({"boot": boot_index, "step": n, "ops": step["ops"]}, sort_keys=True)
    lines = [f"{PYTHON} -I -S -B {shlex.quote(str(RUNNER))} {rel}", _status(n, "fuzz")]
    return lines, {rel: data.encode()}
