"""`moo -d` names the other COW files over the same backing file before it writes anything.

A merge into the backing file rewrites its bytes and mtime, so every OTHER COW file over it
stops matching (uml_moo and the kernel refuse them afterwards: checked here with uml_moo).
Not on a terminal, `moo -d` refuses (one line, exit 1, nothing written: the sha256 of every
file and the backing file's mtime unchanged, no journal) unless --yes; on a terminal (a
real pty as stdin) it asks, and 'n' writes nothing while 'y' merges.
"""
from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import subprocess

from tests.cow.builders import UBDSIM, build_cow, random_file, run

SS = 512
MARKS = {s: bytes([s % 250 + 1]) * SS for s in (0, 9, 10, 11, 2047)}


def sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def moo(*argv: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([UBDSIM, "moo", *argv], capture_output=True, text=True, stdin=stdin,
                          timeout=120)


def setup_shared() -> dict[str, str]:
    """base.img, c.cow (the one to merge, with data) and d.cow over base.img through a
    symlink (another spelling of the same file), plus x.cow over a byte-identical copy (a
    different file: not counted). Returns the expected merge (uml_moo's, made first)."""
    random_file("base.img", 1 << 20, seed=7)
    # an mtime in the past: the merge's write changes it even within the same second
    os.utime("base.img", (1_000_000_000, 1_000_000_000))
    shutil.copy2("base.img", "copy.img")
    os.symlink("base.img", "link.img")
    build_cow("c.cow", 3, "base.img", MARKS)
    assert run(["uml_mkcow", "d.cow", "link.img"]).returncode == 0
    assert run(["uml_mkcow", "x.cow", "copy.img"]).returncode == 0
    assert run(["uml_moo", "c.cow", "expected.img"]).returncode == 0
    return snapshot()


def snapshot() -> dict[str, object]:
    names = sorted(n for n in os.listdir(".") if os.path.isfile(n))
    state: dict[str, object] = {n: sha(n) for n in names}
    state["mtime"] = os.stat("base.img").st_mtime_ns
    state["names"] = sorted(os.listdir("."))
    return state


def test_moo_d_refuses_without_yes_when_another_cow_shares_the_backing(tmp):
    before = setup_shared()
    done = moo("-d", "c.cow")
    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"ubdsim moo: error: not merged: 1 other COW file over '{tmp}/base.img' "
                     "still matches it ('d.cow'): a merge into it rewrites the disk under them "
                     "(their guests' disks are lost); nothing was written (use --yes to merge "
                     "anyway)"]
    assert snapshot() == before                    # sha256 of every file, mtime, no journal
    # --json changes nothing about it
    assert moo("-d", "--json", "c.cow").returncode == 1 and snapshot() == before


def test_moo_d_with_yes_names_them_merges_and_they_no_longer_match(tmp):
    setup_shared()
    done = moo("-d", "--yes", "--json", "c.cow")
    assert done.returncode == 0, done.stderr
    assert done.stderr == (f"ubdsim moo: merging anyway (--yes): the disk under 1 other COW "
                           f"file over '{tmp}/base.img' changes: 'd.cow'\n")
    summary = json.loads(done.stdout)
    assert summary["invalidated"] == ["d.cow"] and summary["in_place"]
    assert sha("base.img") == sha("expected.img")
    # d.cow really is invalidated (uml_moo refuses it: the backing file's mtime changed);
    # x.cow, over a copy with the same bytes, is not touched and still merges
    refused = run(["uml_moo", "d.cow", "d.img"])
    assert refused.returncode != 0 and "mtime mismatch" in refused.stderr.lower()
    assert run(["uml_moo", "x.cow", "x.img"]).returncode == 0


def test_moo_d_looks_in_also_check_directories(tmp):
    random_file("base.img", 1 << 20, seed=8)
    build_cow("c.cow", 3, "base.img", MARKS)
    os.mkdir("elsewhere")
    assert run(["uml_mkcow", "elsewhere/e.cow", "base.img"]).returncode == 0
    before = snapshot()
    done = moo("-d", "--also-check", "elsewhere", "--also-check", ".", "c.cow")
    assert done.returncode == 1 and "('elsewhere/e.cow')" in done.stderr
    assert snapshot() == before and os.listdir("elsewhere") == ["e.cow"]
    bad = moo("-d", "--also-check", "nowhere", "c.cow")
    assert bad.returncode == 1 and bad.stderr == ("ubdsim moo: error: --also-check 'nowhere' "
                                                  "is not a directory\n")
    assert moo("--also-check", "elsewhere", "c.cow", "new.img").returncode == 2
    # without --also-check the COW file's own directory holds no other: merged as before
    done = moo("-d", "c.cow")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "invalidated" not in done.stdout


def test_stale_cows_over_the_backing_do_not_stop_a_merge(tmp):
    """A COW file whose header mtime no longer matches the backing file is already
    invalidated: nothing new is lost, so it does not count (as after a resumed merge)."""
    random_file("base.img", 1 << 20, seed=9)
    build_cow("old.cow", 3, "base.img", mtime=int(os.stat("base.img").st_mtime) - 100)
    build_cow("c.cow", 3, "base.img", MARKS)
    done = moo("-d", "c.cow")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_moo_d_chain_names_the_cows_over_the_layer_it_writes(tmp):
    random_file("base.img", 1 << 20, seed=10)
    assert run(["uml_mkcow", "l1.cow", "base.img"]).returncode == 0
    build_cow("top.cow", 3, "l1.cow", {0: b"\x55" * SS})      # over l1.cow as a raw file
    assert run(["uml_mkcow", "other.cow", "l1.cow"]).returncode == 0
    before = snapshot()
    done = moo("-d", "--chain", "top.cow")
    assert done.returncode == 1 and f"over '{tmp}/l1.cow'" in done.stderr
    assert "('other.cow')" in done.stderr and snapshot() == before


def _on_a_terminal(answer: bytes) -> subprocess.CompletedProcess:
    """`moo -d c.cow` with a pty as stdin (a terminal), answering `answer`."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([UBDSIM, "moo", "-d", "c.cow"], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.close(slave)
        os.write(master, answer)
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_on_a_terminal_it_asks_and_n_writes_nothing(tmp):
    before = setup_shared()
    done = _on_a_terminal(b"n\n")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"ubdsim moo: 1 other COW file over '{tmp}/base.img' still "
                                  "matches it; merging 'c.cow' into it rewrites the disk under "
                                  "them")
    assert "\n  d.cow\nmerge anyway? [y/N] ubdsim moo: error: not merged: " in done.stderr
    assert snapshot() == before


def test_on_a_terminal_y_merges(tmp):
    setup_shared()
    done = _on_a_terminal(b"y\n")
    assert done.returncode == 0, done.stderr
    assert "merge anyway? [y/N] " in done.stderr
    assert done.stdout.rstrip().endswith("; 1 other COW file over it invalidated")
    assert sha("base.img") == sha("expected.img")
    assert not os.path.exists(".c.cow.ubdsim-merge")
