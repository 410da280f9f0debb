"""Crash states: `ubdsim crash` on recorded runs, judged by real tools (e2fsck -fn, ubdsim
check) and by an independent rebuild of each state's device (replay + ubdsim moo)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from ubdsim.lab.logformat import read_log

from .helpers import MARK, crash_json, record, ubdsim

E2FSCK = "e2fsck -fn {device} >/dev/null 2>&1"

# Every sector of the first 32 KiB must be the backing file's (0xAA) or the guest's (0x55),
# the rest the backing file's; prints the bad sectors.
SECTORS = """import sys
data = open(sys.argv[1], 'rb').read()
bad = [i for i in range(len(data) // 512)
       if data[i*512:(i+1)*512] not in ((b'\\xaa' * 512, b'\\x55' * 512) if i < 64 else (b'\\xaa' * 512,))]
print('bad sectors', bad)
sys.exit(1 if bad else 0)
"""


@pytest.fixture(scope="module")
def dd_runs(tmp_path_factory):
    """Eight 4 KiB O_DIRECT writes over a patterned backing file, under 6.1 and 2.4: each
    request is one data pwrite, then its bitmap pwrite (no discard has set the bits)."""
    runs = {}
    for kernel in ("6.1", "2.4"):
        root = tmp_path_factory.mktemp(f"dd{kernel}")
        (root / "b.img").write_bytes(b"\xaa" * (1 << 20))
        (root / "x").write_bytes(b"\x55" * 4096)
        (root / "sectors.py").write_text(SECTORS)
        node = "/dev/ubda" if kernel == "6.1" else "/dev/ubd0"
        script = "".join(f"dd if=x of={node} bs=4096 count=1 seek={i} oflag=direct 2>/dev/null\n"
                         for i in range(8)) + f"{MARK} done\n"
        done = record(root, "L", ["ubd0=c.cow,b.img"], script, kernel=kernel)
        assert done.returncode == 0, done.stderr
        runs[kernel] = root
    return runs


def test_process_states_inside_debugfs_steps_fail_e2fsck(ext4_run):
    """debugfs writes a change as several blocks, in no crash-safe order: a crash between two
    of them leaves a filesystem e2fsck -fn rejects, although the host kept every write."""
    status, report = crash_json(ext4_run.dir, ext4_run.log, "--check", E2FSCK, "--after", "ready")
    assert status == 3 and report["complete"]
    with read_log(str(ext4_run.dir / ext4_run.log)) as log:
        marks = log.marks()
    assert report["failed"] and all(f["point"] > marks["ready"] for f in report["failed"])
    points = [f["point"] for f in report["failed"]]
    assert points == sorted(points)                           # smallest first
    first = report["failed"][0]
    assert first["status"] == 4 and first["writes"] and first["next_write"]
    assert first["since_pass"] is not None and first["since_pass"] < first["point"]
    assert any("no host sync in this log" in n for n in report["notes"])
    # Between the steps (each ended with sync and a mark) every state is clean.
    status, at_marks = crash_json(ext4_run.dir, ext4_run.log, "--check", E2FSCK, "--points", "marks")
    assert status == 0 and at_marks["checked"] == 4 and not at_marks["failed"]


def test_flag_s_does_not_change_the_process_states(ext4_sync_run):
    """What was found: O_SYNC makes each write durable, it does not reorder them, so the
    process model (the host keeps every completed write anyway) fails inside the debugfs
    steps with flag s too; only the power model tells the two apart (next tests)."""
    status, report = crash_json(ext4_sync_run.dir, ext4_sync_run.log, "--check", E2FSCK,
                                "--after", "ready")
    assert status == 3 and report["failed"]
    status, at_marks = crash_json(ext4_sync_run.dir, ext4_sync_run.log, "--check", E2FSCK,
                                  "--points", "marks")
    assert status == 0 and not at_marks["failed"]


def test_power_cut_after_a_guest_sync_loses_writes_without_flag_s(ext4_run):
    """6.1: a guest flush reaches no host file, so after `sync` and a mark the host may
    still lose any write of the run: dropping one sector already breaks the filesystem."""
    status, report = crash_json(ext4_run.dir, ext4_run.log, "--check", E2FSCK, "--model", "power",
                                "--points", "marks", "--max", "60")
    assert status == 3
    assert any("the whole run is one epoch" in n for n in report["notes"])
    lost = report["failed"][0]
    assert len(lost["dropped"]) == 1 and lost["writes"][0]["text"].startswith("#")


def test_power_cut_with_flag_s_loses_nothing(ext4_sync_run):
    status, report = crash_json(ext4_sync_run.dir, ext4_sync_run.log, "--check", E2FSCK,
                                "--model", "power", "--points", "marks")
    assert status == 0 and not report["failed"]
    assert report["states"] == 4                  # nothing volatile: the process states only
    assert any("flag s" in n for n in report["notes"])


def test_a_lost_data_sector_under_its_bit_reads_zeros_only_in_the_power_model(dd_runs):
    root = dd_runs["6.1"]
    check = f"{sys.executable} sectors.py {{device}}"
    status, process = crash_json(root, "L", "--check", check)
    assert status == 0 and process["checked"] == 9            # old, then each block new
    # the same device as before: the fresh COW file (the backing file shows through), and
    # each data write whose bit is not set yet
    assert process["duplicates"] == 9
    status, power = crash_json(root, "L", "--check", check, "--model", "power", "--points", "end")
    assert status == 3
    with read_log(str(root / "L")) as log:
        data_writes = {r["w"]: r for r in log.host_writes() if r.get("why") == "data"}
        geo = next(r["geo"] for r in log.records if r["k"] == "open")
    assert len(power["failed"]) == 64                          # every data sector, one at a time
    for failed in power["failed"]:
        (piece,) = failed["dropped"]
        assert piece["w"] in data_writes                       # a lost bitmap write is harmless
        sector = (piece["offset"] - geo["do"]) // 512
        assert f"bad sectors [{sector}]" in failed["output"]


def test_ubdsim_check_finds_the_data_without_its_bit(dd_runs):
    """{cow}: the crash state's COW file itself (absent before the boot created it). Between
    a request's data write and its bitmap write ubdsim check reports a leak (exit 3) and
    nothing worse."""
    root = dd_runs["6.1"]
    status, report = crash_json(root, "L", "--check",
                                f"[ ! -e {{cow}} ] || {sys.executable} -m ubdsim check {{cow}} >/dev/null")
    assert status == 3
    with read_log(str(root / "L")) as log:
        data_points = sorted(r["w"] for r in log.host_writes() if r.get("why") == "data")
    assert [f["point"] for f in report["failed"]] == data_points
    assert {f["status"] for f in report["failed"]} == {3}


@pytest.mark.parametrize("kernel", ["6.1", "2.4"])
def test_each_state_device_equals_replay_then_moo(dd_runs, kernel, tmp_path):
    """The crash tool's incremental device image against an independent path: replay the
    log to the same point and merge with ubdsim moo."""
    root = dd_runs[kernel]
    keep = tmp_path / "states"
    keep.mkdir()
    status, report = crash_json(root, "L", "--check",
                                f"cp --sparse=always {{device}} {keep}/$UBDSIM_CRASH_STATE.img")
    assert status == 0
    _compare_states(root, keep, tmp_path)


def test_ext4_state_devices_equal_replay_then_moo(ext4_run, tmp_path):
    keep = tmp_path / "states"
    keep.mkdir()
    status, report = crash_json(ext4_run.dir, ext4_run.log, "--check",
                                f"cp --sparse=always {{device}} {keep}/$UBDSIM_CRASH_STATE.img",
                                "--after", "m1")
    # write-back coalesces debugfs's buffered writes into a few requests per sync
    assert status == 0 and report["checked"] > 5
    _compare_states(ext4_run.dir, keep, tmp_path, every=3)


def _compare_states(root: Path, keep: Path, tmp_path: Path, every: int = 1) -> None:
    names = sorted(keep.iterdir(), key=lambda p: int(p.stem[1:]))
    assert names
    for image in names[::every]:
        point = image.stem[1:]
        out = tmp_path / f"r{point}"
        assert ubdsim(root, "replay", "L", "--upto", point, "--into", str(out)).returncode == 0
        merged = tmp_path / f"m{point}.img"
        if (out / "c.cow").exists():
            done = ubdsim(tmp_path, "moo", str(out / "c.cow"), str(merged))
            assert done.returncode == 0, done.stderr
            expected = merged.read_bytes()
        else:
            expected = (root / "b.img").read_bytes()               # before the COW existed
        assert image.read_bytes() == expected, point


def test_parallel_checks_give_the_same_report(dd_runs):
    root = dd_runs["6.1"]
    check = f"{sys.executable} sectors.py {{device}}"
    one = crash_json(root, "L", "--check", check, "--model", "power", "--points", "end")[1]
    two = crash_json(root, "L", "--check", check, "--model", "power", "--points", "end",
                     "--jobs", "2")[1]
    assert [f["state"] for f in one["failed"]] == [f["state"] for f in two["failed"]]
    assert (one["checked"], one["duplicates"]) == (two["checked"], two["duplicates"])


def test_bad_input_is_one_line(dd_runs, tmp_path):
    root = dd_runs["6.1"]
    for args, code, words in (
            (["--check", "true"], 2, "{device}"),
            (["--check", "true {device}", "--after", "nosuch"], 2, "no such mark"),
            (["--check", "true {device}", "--unit", "5"], 2, "--unit 5")):
        done = ubdsim(root, "crash", "L", *args)
        assert done.returncode == code, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr
    (tmp_path / "junk").write_text("not a log\n")
    done = ubdsim(tmp_path, "crash", "junk", "--check", "true {device}")
    assert done.returncode == 1 and "not a lab log" in done.stderr
    # a backing file that changed since the recording is refused; --from gives the original
    (tmp_path / "orig").mkdir()
    shutil.copy2(root / "b.img", tmp_path / "orig" / "b.img")
    original, st = (root / "b.img").read_bytes(), os.stat(root / "b.img")
    try:
        (root / "b.img").write_bytes(b"\x00" * len(original))
        done = ubdsim(root, "crash", "L", "--check", "true {device}")
        assert done.returncode == 1 and "sha256 differs" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        done = ubdsim(root, "crash", "L", "--check", f"{sys.executable} sectors.py {{device}}",
                      "--from", str(tmp_path / "orig"))
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        (root / "b.img").write_bytes(original)
        os.utime(root / "b.img", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = json.loads(ubdsim(root, "crash", "L", "--check", "true {device}", "--json").stdout)
    assert report["checked"] == 9
