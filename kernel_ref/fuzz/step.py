"""The fuzz guest step: scenario data that runs guest_runner.py, and the sh lines it becomes.

Why a step of its own: a fuzz program's operations (pread64 at byte offsets, vectored I/O,
lseek, fadvise, fallocate, block ioctls) cannot be spelled with kernel_ref/guest.py's dd
steps, so a saved disagreement carries them as ONE guest step `{"op": "fuzz", "ops": [...]}`
holding the runner's operations with byte offsets already resolved. compile_step() gives the
sh lines of that step in the exact shape guest.py gives its own steps (the same script
header, `<n> fuzz rc=<status>` through guest._status(), counted in `fails`), so a boot
compiled here and one compiled by guest.compile_boot() with a `fuzz` branch calling
compile_step() are the same script, and a golden capture taken now stays valid there.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..guest import SCRATCH, _status, compile_boot

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


def compile_fuzz_boot(work: Path, boot_index: int, steps: list[dict]
                      ) -> tuple[str, dict[str, bytes]]:
    """A whole boot's script: guest.compile_boot()'s header and exit line around the fuzz
    steps. Only fuzz steps here; mixed boots need guest.py to know the fuzz step."""
    bad = [s["op"] for s in steps if s["op"] != "fuzz"]
    if bad:
        raise ValueError(f"not fuzz steps: {bad} (kernel_ref/guest.py compiles those)")
    head, _ = compile_boot(work, boot_index, [])
    lines = head.rstrip("\n").split("\n")
    exit_line = lines.pop()                          # exit "$fails"
    files: dict[str, bytes] = {}
    for n, one in enumerate(steps, 1):
        more, needed = compile_step(boot_index, n, one)
        lines += more
        files.update(needed)
    lines.append(exit_line)
    return "\n".join(lines) + "\n", files
