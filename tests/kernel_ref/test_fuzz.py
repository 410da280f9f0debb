"""`python -m kernel_ref fuzz` (issue: differential fuzzing against the real kernel).

A fixed-seed batch of generated programs runs on linux.uml and on `ubdsim run --kernel 6.1`
and must agree, nothing excluded (the two gaps it found, buffered writes that were
write-through and partly up-to-date pages, were fixed by the write-back page cache). The shrinker is shown a program
that disagrees for a real reason (linux.uml against `ubdsim run` given unit flag r: its
writes fail with EPERM, as ubd_kern.c ubd_open() [6.1] opens a read-only unit read-write)
and must reduce it to the minimal program, which is then saved as a scenario with the kernel's golden capture and
replayed. Everything boots the real kernel; if linux.uml cannot run here these tests fail
with the reason.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kernel_ref import launcher
from kernel_ref.backends import UmlBackend
from kernel_ref.fuzz import replay, save
from kernel_ref.fuzz.batch import Pool
from kernel_ref.backends import UbdsimBackend
from kernel_ref.fuzz.execute import Side, kernel_side
from kernel_ref.fuzz.generator import MIN_COW_SECTORS, Config, generate
from kernel_ref.fuzz.program import Program, Unit
from kernel_ref.fuzz.shrink import shrink

REPO = Path(__file__).resolve().parents[2]

FIXED_SEED = "fixed-4"                # fixed-1 lost NOREUSE once nothing was excluded
FIXED_COUNT = 30                 # about a minute on 2 cores (about 2 s a program, 2 at a time)


def _fuzz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel_ref", "fuzz", *args], cwd=REPO,
                          capture_output=True, text=True)


def _fixed_programs() -> list[Program]:
    return [generate(f"{FIXED_SEED}:{i}", Config()) for i in range(FIXED_COUNT)]


def test_the_fixed_batch_covers_every_kind_of_unit_and_operation():
    """The batch that must agree is worth something: every unit kind, COW version and flag,
    odd sizes, and every operation the issue names appear in it."""
    programs = _fixed_programs()
    units = [u for p in programs for u in p.units]
    ops = [op for p in programs for b in range(len(p.boots)) for op in p.resolved(b)]
    assert {u.kind for u in units} == {"mkcow", "built", "create", "alone", "raw"}
    assert {u.version for u in units if u.kind == "built"} >= {1, 2, 3}
    assert set("rsctd") <= set("".join(u.flags for u in units))
    assert any(u.size % 512 for u in units) and any(u.size % 4096 for u in units)
    assert {op["op"] for op in ops} >= {"open", "close", "reopen", "pread", "pwrite", "read",
                                        "write", "readv", "writev", "lseek", "fsync",
                                        "fdatasync", "sync", "fadvise", "fallocate", "ioctl"}
    ioctls = {op["name"] for op in ops if op["op"] == "ioctl"}
    assert ioctls >= {"BLKDISCARD", "BLKZEROOUT", "BLKFLSBUF", "BLKGETSIZE64"}
    assert {"O_DIRECT", "O_SYNC", "O_RDONLY"} <= {f for op in ops if op["op"] == "open"
                                                 for f in op["flags"]}
    assert {op["mode"] for op in ops if op["op"] == "fallocate"} >= {3, 7, 0x10, 0x11}
    assert {op["advice"] for op in ops if op["op"] == "fadvise"} >= set(range(6))


def test_programs_are_made_again_from_their_names():
    first, again, other = generate("s:3"), generate("s:3"), generate("s:4")
    assert first.dumps() == again.dumps() and first.dumps() != other.dumps()


def test_usage_errors_exit_2():
    for args in (["--count", "0"], ["--capture"], ["--profile", "2.4"],
                 ["--exclude", "no-such-class"], ["--replay", "/nonexistent-dir"]):
        proc = _fuzz(*args)
        assert proc.returncode == 2, (args, proc.stderr)


def test_a_fixed_seed_batch_agrees_with_linux_uml():
    """FIXED_COUNT programs, judged by linux.uml; the summary comes as JSON."""
    launcher.require_kernel()
    proc = _fuzz("--seed", FIXED_SEED, "--count", str(FIXED_COUNT), "--shrink-runs", "0",
                 "--json")
    summary = json.loads(proc.stdout)
    report = "\n".join(f"{f['program']}: {f['categories']}\n  " + "\n  ".join(f["diffs"])
                       for f in summary["found"])
    assert proc.returncode == 0 and summary["disagreements"] == 0, report or proc.stderr
    assert summary["programs"] == FIXED_COUNT
    assert summary["operations"] == sum(p.operations for p in _fixed_programs())
    assert summary["excluded"] == []


def _flag_r_on_unit_0(options: list[str]) -> list[str]:
    """ubd0=... -> ubd0r=...: the same unit, read-only."""
    return [options[0].replace("=", "r=", 1), *options[1:]]


def _noisy_program() -> Program:
    """Two units and nine operations, of which one pwrite is what flag r changes."""
    ops = [{"op": "open", "slot": 0, "unit": 0, "flags": ["O_RDWR", "O_DIRECT"]},
           {"op": "pread", "slot": 0, "at": ["start", 4096], "len": 8192, "misalign": 0},
           {"op": "ioctl", "slot": 0, "name": "BLKGETSIZE64"},
           {"op": "open", "slot": 1, "unit": 1, "flags": ["O_RDONLY"]},
           {"op": "pread", "slot": 1, "at": ["end", -1000], "len": 4096, "misalign": 0},
           {"op": "pwrite", "slot": 0, "at": ["start", 16384], "len": 16384, "misalign": 0,
            "tag": "W1.6"},
           {"op": "fsync", "slot": 0},
           {"op": "lseek", "slot": 1, "at": ["start", 0], "whence": "END"},
           {"op": "close", "slot": 1}]
    return Program(name="shrink-test", units=[Unit("mkcow", 300 * 512), Unit("raw", 100 * 512)],
                   boots=[ops])


def test_the_shrinker_reduces_a_disagreement_to_its_minimal_program(tmp_path):
    launcher.require_kernel()
    flagged = Side(UbdsimBackend("6.1"), "ubdsim flag r", _flag_r_on_unit_0)
    with Pool(kernel_side(), flagged) as pool:
        found = next(pool.map([_noisy_program()]))
        assert not found.agree and found.categories[0] == "out:pwrite[direct]:errno", found.diffs
        shrunk = shrink(pool, found, budget=40)
    print(f"shrunk in {shrunk.runs} runs: " + "; ".join(shrunk.steps))
    assert shrunk.verdict == "shrunk", (shrunk.verdict, shrunk.kernel_varies)
    minimal = shrunk.minimal.program
    assert len(minimal.units) == 1 and minimal.units[0].flags == ""
    assert [op["op"] for op in minimal.boots[0]] == ["open", "pwrite"], minimal.boots
    assert minimal.units[0].size == MIN_COW_SECTORS * 512          # halved to the floor
    assert minimal.boots[0][1]["len"] == 512                       # one sector
    assert "+1.2 pwrite" in "\n".join(shrunk.minimal.diffs)        # EPERM on the flagged side

    # Saved as a scenario with linux.uml's golden capture, then replayed: both backends
    # agree on it (it was flag r that disagreed), and linux.uml matches its capture.
    module, golden_path = save.write(tmp_path, shrunk, UmlBackend().version(), "test")
    assert golden_path == tmp_path / "golden" / "fuzz-shrink-test.json.gz"
    [scn] = replay.load(tmp_path)
    assert scn["name"] == "fuzz-shrink-test" and scn["options"] == ["ubd0=c0.cow,b0.img"]
    assert [s["op"] for s in scn["boots"][0]["guest"]] == ["fuzz"]
    verdicts = replay.replay(tmp_path, False, lambda v: None)
    assert [(v.agree, v.notes) for v in verdicts] == [(True, [])], verdicts
