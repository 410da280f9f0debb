"""Record and replay: `ubdsim run --record` on a real workload, `ubdsim log show`, and
`ubdsim replay` rebuilding the host files byte for byte, at the end and at a mark (against a
copy the guest itself took at that mark)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from ubdsim.lab.logformat import read_log

from .helpers import MARK, record, sparse_file, ubdsim


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_log_holds_every_host_write_and_ends_with_the_live_files(ext4_run):
    with read_log(str(ext4_run.dir / ext4_run.log)) as log:
        assert log.complete and log.problem is None
        writes = log.host_writes()
        assert [r["w"] for r in writes] == list(range(1, len(writes) + 1))
        assert writes[0]["k"] == "content" and writes[0]["why"] == "create"
        assert {r["k"] for r in writes} == {"content", "hw", "hf"}
        files = log.files
        cow = next(f for f in files.values() if f["path"].endswith("/c.cow"))
        back = next(f for f in files.values() if f["path"].endswith("/b.img"))
        assert cow["exists"] is False                       # created by the boot
        assert back["sha256"] == sha256(ext4_run.dir / "b.img")
        end = log.end()
        assert end["writes"] == len(writes)
        final = {f["f"]: f for f in end["files"]}
        assert final[cow["f"]]["sha256"] == sha256(ext4_run.dir / "c.cow")
        assert back["f"] not in final                       # never written
        # every write request is hashed; its data pwrites (one per segment, do_io()) carry
        # those bytes, in order
        for i, r in enumerate(log.records):
            if r["k"] == "req" and r["op"] == "write":
                pieces = []
                for x in log.records[i + 1:]:
                    if x["k"] == "req":
                        break
                    if x["k"] == "hw" and x["why"] == "data":
                        pieces.append(bytes(log.payload(x)))
                assert pieces and hashlib.sha256(b"".join(pieces)).hexdigest()[:32] == r["h"]
        assert [m for m in log.marks()] == ["ready", "m1", "m2", "done"]


def test_replay_to_the_last_write_is_the_live_cow_file(ext4_run, tmp_path):
    done = ubdsim(ext4_run.dir, "replay", ext4_run.log, "--into", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "equal to the live run's final files: yes" in done.stdout
    assert (tmp_path / "out" / "c.cow").read_bytes() == (ext4_run.dir / "c.cow").read_bytes()
    assert os.listdir(tmp_path / "out") == ["c.cow"]        # backing files are not rebuilt


def test_replay_to_a_mark_is_the_copy_the_guest_took_there(ext4_run, tmp_path):
    done = ubdsim(ext4_run.dir, "replay", ext4_run.log, "--upto", "m1", "--into",
                  str(tmp_path / "m1"), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["mark"] == "m1" and result["upto"] < result["total"]
    assert (tmp_path / "m1" / "c.cow").read_bytes() == (ext4_run.dir / "snap.cow").read_bytes()
    # ...and that copy is a clean filesystem (merged with its backing file)
    merged = tmp_path / "m1.img"
    assert ubdsim(tmp_path, "moo", str(tmp_path / "m1" / "c.cow"), str(merged)).returncode == 0
    assert ubdsim(tmp_path, "info", str(tmp_path / "m1" / "c.cow")).returncode == 0


def test_replay_n_and_n_plus_1_differ_by_exactly_write_n_plus_1(ext4_run, tmp_path):
    with read_log(str(ext4_run.dir / ext4_run.log)) as log:
        n = log.marks()["m1"] + 3
        write = log.host_writes()[n]                       # host write n+1
        assert write["k"] == "hw"
        payload = bytes(log.payload(write))
    for upto in (n, n + 1):
        assert ubdsim(ext4_run.dir, "replay", ext4_run.log, "--upto", str(upto), "--into",
                      str(tmp_path / str(upto))).returncode == 0
    before = (tmp_path / str(n) / "c.cow").read_bytes()
    after = (tmp_path / str(n + 1) / "c.cow").read_bytes()
    start, end = write["o"], write["o"] + len(payload)
    assert after[start:end] == payload
    assert before[:start] == after[:start] and before[end:] == after[end:]


def test_log_show_summary_and_events(ext4_run):
    done = ubdsim(ext4_run.dir, "log", "show", ext4_run.log)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "complete" in out and "kernel 6.1" in out
    assert "durability: no host sync in this log" in out
    assert "marks: ready after #" in out
    assert 'ubda: kernel: Creating "c.cow" as COW file for "b.img"' in out
    assert "ubda create c.cow over b.img (V3): #1 c.cow set to" in out
    assert "ubda discard 0+32768 sectors -> #" in out          # mkfs.ext4's discard
    assert "mark m1 (after host write #" in out
    shown = json.loads(ubdsim(ext4_run.dir, "log", "show", "--json", ext4_run.log).stdout)
    assert shown["summary"]["complete"] is True
    assert shown["events"][0]["magic"] == "ubdsim-lab-log"
    assert all("_p" not in e for e in shown["events"])


def test_trace_and_log_are_one_event_format(tmp_path):
    """--trace-format jsonl prints exactly the log's records (without payload bytes); the
    text trace says per request what the driver and the host did."""
    sparse_file(tmp_path / "b.img", 1 << 20)
    (tmp_path / "x").write_bytes(b"\x55" * 8192)
    script = ("dd if=x of=/dev/ubda bs=4096 count=1 oflag=direct 2>/dev/null\n"
              "dd if=x of=/dev/ubda bs=4096 count=1 seek=1 oflag=direct 2>/dev/null\n")
    done = record(tmp_path, "L", ["ubd0=c.cow,b.img"], script,
                  extra=["--trace=t.jsonl", "--trace-format", "jsonl"])
    assert done.returncode == 0, done.stderr
    with read_log(str(tmp_path / "L")) as log:
        records = [log.header] + [{k: v for k, v in r.items() if k != "_p"} for r in log.records]
    traced = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert traced == records
    text = ubdsim(tmp_path, "run", "--kernel", "6.1", "--trace=t.txt", "ubd0=c.cow,b.img", "--",
                  "dd", "if=x", "of=/dev/ubda", "bs=4096", "count=1", "seek=2", "oflag=direct")
    assert text.returncode == 0, text.stderr
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert "ubda write 16+8 sectors -> #1 c.cow pwrite 20480+4096 (data); #2 pwrite 8192+16 " \
           "(bitmap words 0-1)" in lines
    assert "ubda open c.cow: COW V3 over b.img, 1048576 bytes, rw" in lines


def test_record_and_trace_never_write_into_a_unit_file_or_over_a_log(tmp_path):
    sparse_file(tmp_path / "b.img", 1 << 20)
    before = (tmp_path / "b.img").read_bytes()
    for option in (["--record", "b.img"], ["--trace=b.img"], ["--record", "c.cow"]):
        done = ubdsim(tmp_path, "run", "--kernel", "6.1", *option, "ubd0=c.cow,b.img", "--", "true")
        assert done.returncode == 1, (option, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "refusing" in done.stderr
        assert (tmp_path / "b.img").read_bytes() == before and not (tmp_path / "c.cow").exists()
    (tmp_path / "old.log").write_text("keep me\n")
    done = ubdsim(tmp_path, "run", "--kernel", "6.1", "--record", "old.log", "ubd0=c.cow,b.img",
                  "--", "true")
    assert done.returncode == 1 and "already exists" in done.stderr
    assert (tmp_path / "old.log").read_text() == "keep me\n"
    done = ubdsim(tmp_path, "run", "--kernel", "6.1", "--trace", "ubd0=c.cow,b.img", "--", "true")
    assert done.returncode == 2 and "looks like a kernel option" in done.stderr


def test_an_existing_cow_file_needs_a_snapshot_or_a_copy(tmp_path):
    """A COW file that existed before the recording: without --record-snapshot replay wants
    an unchanged copy (--from); with it the log alone is enough."""
    sparse_file(tmp_path / "b.img", 1 << 20)
    (tmp_path / "x").write_bytes(b"\x77" * 4096)
    first = record(tmp_path, "first.log", ["ubd0=c.cow,b.img"],
                   "dd if=x of=/dev/ubda bs=4096 count=1 oflag=direct 2>/dev/null")
    assert first.returncode == 0, first.stderr
    original = (tmp_path / "c.cow").read_bytes()
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "c.cow").write_bytes(original)
    script = "dd if=x of=/dev/ubda bs=4096 count=1 seek=3 oflag=direct 2>/dev/null"
    plain = record(tmp_path, "plain.log", ["ubd0=c.cow,b.img"], script)
    assert plain.returncode == 0, plain.stderr
    refused = ubdsim(tmp_path, "replay", "plain.log", "--into", "r1")
    assert refused.returncode == 1
    assert len(refused.stderr.strip().splitlines()) == 1 and "--record-snapshot" in refused.stderr
    done = ubdsim(tmp_path, "replay", "plain.log", "--into", "r1", "--from", "orig")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r1" / "c.cow").read_bytes() == (tmp_path / "c.cow").read_bytes()
    assert ubdsim(tmp_path, "replay", "plain.log", "--upto", "start", "--into", "r0",
                  "--from", "orig").returncode == 0
    assert (tmp_path / "r0" / "c.cow").read_bytes() == original
    snap = record(tmp_path, "snap.log", ["ubd0=c.cow,b.img"],
                  "dd if=x of=/dev/ubda bs=4096 count=1 seek=5 oflag=direct 2>/dev/null",
                  extra=["--record-snapshot"])
    assert snap.returncode == 0, snap.stderr
    done = ubdsim(tmp_path, "replay", "snap.log", "--into", "r2")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r2" / "c.cow").read_bytes() == (tmp_path / "c.cow").read_bytes()
    again = ubdsim(tmp_path, "replay", "snap.log", "--into", "r2")
    assert again.returncode == 1 and "exists" in again.stderr
    into_itself = ubdsim(tmp_path, "replay", "snap.log", "--into", ".", "--force")
    assert into_itself.returncode == 1 and "same file" in into_itself.stderr
    assert (tmp_path / "c.cow").read_bytes() == (tmp_path / "r2" / "c.cow").read_bytes()


def test_recording_keeps_the_device_locks(tmp_path):
    """The recorder reads the COW file at its open (geometry) through the device's own
    descriptor: opening and closing the file would have dropped the device's fcntl lock
    (POSIX locks go with any close), and another process could then lock it."""
    sparse_file(tmp_path / "b.img", 1 << 20)
    probe = ("import fcntl, sys\nf = open('c.cow', 'r+b')\ntry:\n"
             "    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n"
             "    print('locked')\nelse:\n    print('NOT locked')\n")
    (tmp_path / "probe.py").write_text(probe)
    done = record(tmp_path, "L", ["ubd0=c.cow,b.img"],
                  f"exec 3<>/dev/ubda\n{sys.executable} probe.py\nexec 3<&-",
                  extra=["--trace=t.txt"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "locked"


def test_marks_from_the_guest_and_their_errors(tmp_path):
    sparse_file(tmp_path / "b.img", 1 << 20)
    done = record(tmp_path, "L", ["ubd0=c.cow,b.img"],
                  f"{MARK} one\n{MARK} one 2>err.txt || echo refused\n{MARK} 9bad || echo $?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused", "2"]
    assert "already set" in (tmp_path / "err.txt").read_text()
    with read_log(str(tmp_path / "L")) as log:
        assert log.marks() == {"one": 1}               # after the boot's creation of c.cow
    outside = ubdsim(tmp_path, "mark", "x")
    assert outside.returncode == 1 and "UBDSIM_MARK" in outside.stderr
    assert len(outside.stderr.strip().splitlines()) == 1
