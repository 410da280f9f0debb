"""`ubdsim info --summary`: COW files grouped by backing file, and what a `moo -d` breaks.

A directory holds 5 COW files over 2 backing files: a.img (3 COW files, one naming it
through a symlink) and gone.img (2 COW files; the file was deleted), plus files that are
not COW files (the backing file, a symlink, a text file, a FIFO that must not block the
scan). The report is judged against the files (st_size, st_blocks, the sectors built into
each) and the invalidation it predicts is made to happen with a real `moo -d`, after which
uml_moo refuses the others.
"""
from __future__ import annotations

import json
import os
import subprocess

from tests.cow.builders import UBDSIM, build_cow, random_file, run

SS = 512
PAST = 1_000_000_000


def ubdsim(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([UBDSIM, *argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def marks(*sectors: int) -> dict[int, bytes]:
    return {s: bytes([s % 250 + 1]) * SS for s in sectors}


def build_directory() -> dict[str, int]:
    """images/: the 5 COW files; returns each one's marked sector count."""
    os.mkdir("images")
    os.chdir("images")
    random_file("a.img", 1 << 20, seed=21)
    os.utime("a.img", (PAST, PAST))
    os.symlink("a.img", "alias.img")
    build_cow("g1.cow", 3, "a.img", marks(0, 1, 2, 100))
    assert run(["uml_mkcow", "g2.cow", "a.img"]).returncode == 0
    build_cow("g3.cow", 2, "alias.img", marks(5))
    random_file("gone.img", 512 << 10, seed=22)
    assert run(["uml_mkcow", "m1.cow", "gone.img"]).returncode == 0
    build_cow("m2.cow", 3, "gone.img", marks(7, 8))
    os.unlink("gone.img")
    open("notes.txt", "w").write("not a disk\n")
    os.mkfifo("pipe")
    os.chdir("..")
    return {"g1.cow": 4, "g2.cow": 0, "g3.cow": 1, "m1.cow": 0, "m2.cow": 2}


def summary(*paths: str) -> dict:
    done = ubdsim("info", "--summary", "--json", *paths)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_summary_groups_cows_by_backing_file(tmp):
    marked = build_directory()
    report = summary("images")
    assert report["cows"] == 5 and report["not_cow"] == []
    present, missing = report["groups"]
    a = os.stat("images/a.img")
    assert present["present"] and (present["dev"], present["ino"]) == (a.st_dev, a.st_ino)
    assert present["backing"] == str(tmp / "images/a.img")
    assert present["names"] == [str(tmp / "images/a.img"), str(tmp / "images/alias.img")]
    assert present["size"] == 1 << 20 and present["allocated_bytes"] == a.st_blocks * 512
    assert [c["path"] for c in present["cows"]] == ["images/g1.cow", "images/g2.cow", "images/g3.cow"]
    assert not missing["present"] and missing["error"] == "No such file or directory"
    assert missing["backing"] == str(tmp / "images/gone.img") and missing["dev"] is None
    assert [c["path"] for c in missing["cows"]] == ["images/m1.cow", "images/m2.cow"]
    for group in (present, missing):
        for cow in group["cows"]:
            st = os.stat(cow["path"])
            assert cow["apparent_bytes"] == st.st_size
            assert cow["allocated_bytes"] == st.st_blocks * 512
            assert cow["sectors_marked"] == marked[os.path.basename(cow["path"])]
            assert cow["mtime_match"] is (True if group is present else None)
        assert group["cow_allocated_bytes"] == sum(c["allocated_bytes"] for c in group["cows"])
    assert [c["version"] for c in present["cows"]] == [3, 3, 2]
    assert present["at_risk"] == ["images/g1.cow", "images/g2.cow", "images/g3.cow"]
    assert missing["at_risk"] == []                     # no backing file, no moo -d
    assert report["allocated_bytes"] == sum(os.stat(f"images/{n}").st_blocks * 512 for n in marked)
    # the text says the same
    text = ubdsim("info", "--summary", "images")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert f"backing file {tmp}/images/a.img (device {a.st_dev}, inode {a.st_ino}; " in out
    assert ("moo -d of any one of these 3 invalidates the other 2: images/g1.cow, "
            "images/g2.cow, images/g3.cow") in out
    assert f"backing file {tmp}/images/gone.img (missing: No such file or directory): 2 COW files" in out
    assert "moo -d: not possible (no backing file to merge into)" in out
    assert out.rstrip().splitlines()[-1].endswith(
        f"allocated ({report['apparent_bytes']} and {report['allocated_bytes']} bytes)")
    assert out.rstrip().splitlines()[-1].startswith("5 COW files over 2 backing files: ")


def test_the_predicted_invalidation_is_what_moo_d_does(tmp):
    build_directory()
    done = ubdsim("moo", "-d", "--yes", "images/g1.cow")
    assert done.returncode == 0, done.stderr
    assert "2 other COW files over" in done.stderr and "'images/g2.cow', 'images/g3.cow'" in done.stderr
    present = summary("images")["groups"][0]
    assert [c["mtime_match"] for c in present["cows"]] == [False, False, False]
    assert present["at_risk"] == []
    for name in ("g2.cow", "g3.cow"):
        refused = run(["uml_moo", f"images/{name}", "out.img"])
        assert refused.returncode != 0 and "mtime mismatch" in refused.stderr.lower()


def test_named_files_not_cow_are_one_line_each_and_exit_1(tmp):
    build_directory()
    done = ubdsim("info", "--summary", "images/g1.cow", "images/notes.txt", "images/nope",
                  "images", "images/g2.cow")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "ubdsim info: error: 'images/notes.txt': no COW magic: not a COW file",
        "ubdsim info: error: 'images/nope': No such file or directory"]
    assert "5 COW files over 2 backing files" in done.stdout     # each file counted once
    assert ubdsim("info", "images/g1.cow", "images/g2.cow").returncode == 2
    assert ubdsim("info", "--summary", "-b", "x", "images/g1.cow").returncode == 2
    assert ubdsim("info", "--summary", "--chain", "images").returncode == 2
