"""`ubdsim moo` against uml_moo, run during the test, on COW files built from the spec tables.

The expected image is also computed here from first principles (backing bytes with the
marked sectors replaced), so each case checks ubdsim against both the model and uml_moo on
every sector uml_moo gets right: sectors with a bitmap bit, before uml_moo's truncated end.
"""
from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from tests.cow.builders import UBDSIM, build_cow, extent_map, random_file, run
from ubdsim.cow.image import CowImage
from ubdsim.errors import MtimeMismatch
from ubdsim.ops.merge import journal_path, merge_in_place, merge_new

SS = 512


def make_case(version: int, size: int, seed: int, broken: bool = False, nmarks: int = 12):
    """A backing file (random, with a hole and a zero stretch) and a COW over it with marks on
    the first, last and random sectors; some marked sectors hold zeros. Returns (marks, geo)."""
    rng = random.Random(seed)
    random_file("backing", size, seed, holes=True)
    os.utime("backing", (1_000_000_000, 1_000_000_000))   # any later write changes the mtime
    sectors = -(-size // SS)
    picks = {0, sectors - 1} | {rng.randrange(sectors) for _ in range(nmarks)}
    marks = {}
    for s in sorted(picks):
        length = min(SS, size - s * SS)
        marks[s] = bytes(length) if rng.random() < 0.25 else rng.randbytes(length)
    geo = build_cow("cow", version, "backing", marks, broken=broken)
    return marks, geo


def model(marks: dict[int, bytes], covered: int) -> bytes:
    """The merged image: backing bytes with every marked sector that has a bit replaced."""
    image = bytearray(open("backing", "rb").read())
    for s, data in marks.items():
        if s < covered:
            image[s * SS:s * SS + len(data)] = data
    return bytes(image)


CASES = [(3, False, 4194304 + 100), (3, False, 64 << 20), (3, True, 300 * SS + 17),
         (2, False, 1000 * SS), (2, False, 1003 * SS + 1), (1, False, 1003 * SS),
         (1, False, 4608), (3, False, 512)]


@pytest.mark.parametrize("version,broken,size", CASES)
def test_new_file_matches_uml_moo_and_keeps_the_partial_sector(tmp, version, broken, size):
    marks, (_, _, bitmap_len, _) = make_case(version, size, seed=size + version)
    covered = min(bitmap_len * 8, -(-size // SS))
    r = run(["uml_moo", "cow", "oracle.img"])
    assert r.returncode == 0, r.stderr
    r = run([UBDSIM, "moo", "cow", "mine.img"])
    assert r.returncode == 0, r.stderr
    oracle, mine, expected = (open("oracle.img", "rb").read(), open("mine.img", "rb").read(),
                              model(marks, covered))
    right = min(covered, size // SS) * SS          # the sectors uml_moo gets right
    assert len(oracle) == size // SS * SS          # uml_moo truncates a final partial sector
    assert mine[:right] == oracle[:right]
    assert mine == expected and len(mine) == size  # ubdsim keeps every byte


def test_new_file_is_sparse_where_the_backing_file_has_holes(tmp):
    make_case(3, 1 << 20, seed=7, nmarks=0)
    r = run([UBDSIM, "moo", "--json", "cow", "mine.img"])
    summary = json.loads(r.stdout)
    # random_file() punched a hole at [64 KiB, 128 KiB): it stays a hole in the new file
    assert all(not (lo < 2 * 65536 and hi > 65536) for lo, hi in extent_map("mine.img"))
    assert summary["bytes_written"] == os.stat("mine.img").st_blocks * 512 <= (1 << 20) - 65536
    assert summary["sectors_from_cow"] + summary["sectors_from_backing"] == summary["sectors"] == 2048
    assert set(summary) >= {"sectors_from_cow", "sectors_from_backing", "bytes_written", "seconds"}


@pytest.mark.parametrize("chunk", [512, 1536, 4096 * 3])
def test_tiny_chunks_give_the_same_image(tmp, chunk):
    marks, (_, _, bitmap_len, _) = make_case(3, 100 * SS + 3, seed=chunk, nmarks=40)
    merge_new("cow", "mine.img", chunk_bytes=chunk)
    assert open("mine.img", "rb").read() == model(marks, 101)
    with CowImage.open("cow") as image:
        assert list(image.marked_runs(scan_bytes=1)) == list(image.marked_runs())
        assert sum(c for _, c in image.marked_runs(scan_bytes=1)) == len(marks)


@pytest.mark.parametrize("version,broken,size", [(3, False, 2000 * SS + 100), (3, True, 999 * SS),
                                                 (2, False, 1003 * SS), (1, False, 800 * SS)])
def test_in_place_matches_uml_moo_d(tmp, version, broken, size):
    marks, (_, _, bitmap_len, _) = make_case(version, size, seed=size, broken=broken)
    covered = min(bitmap_len * 8, -(-size // SS))
    shutil.copy2("backing", "oracle.img")      # copy2 keeps the mtime the header checks
    shutil.copy2("backing", "mine.img")
    r = run(["uml_moo", "-d", "-b", "oracle.img", "cow"])
    assert r.returncode == 0, r.stderr
    r = run([UBDSIM, "moo", "-b", "mine.img", "-d", "cow"])    # -b before -d works too
    assert r.returncode == 0, r.stderr
    oracle, mine = open("oracle.img", "rb").read(), open("mine.img", "rb").read()
    right = min(covered, size // SS) * SS
    assert mine[:right] == oracle[:right]
    shutil.move("mine.img", "backing")
    assert open("backing", "rb").read() == model(marks, covered)
    assert not os.path.exists(journal_path("cow"))


def test_uml_moo_cannot_take_b_before_d_but_ubdsim_can(tmp):
    make_case(3, 64 * SS, seed=11)
    shutil.copy2("backing", "other")
    r = run(["uml_moo", "-b", "other", "-d", "cow"])
    assert r.returncode != 0                   # uml_moo takes "-d" as the COW file's name
    assert run([UBDSIM, "moo", "-d", "-b", "other", "cow"]).returncode == 0


def test_in_place_merge_resumes_after_a_crash(tmp):
    marks, _ = make_case(3, 4096 * SS + 5, seed=12, nmarks=200)
    calls = []

    def crash(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_in_place("cow", chunk_bytes=SS, progress=crash)
    assert os.path.exists(journal_path("cow"))
    # the backing file's mtime changed under the header: only the journal lets a re-run in
    r = run([UBDSIM, "moo", "-d", "cow"])
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout
    assert open("backing", "rb").read() == model(marks, 4097)
    assert not os.path.exists(journal_path("cow"))
    with pytest.raises(MtimeMismatch):           # finished: the COW no longer matches, as with uml_moo
        merge_in_place("cow")


@pytest.mark.parametrize("what", ["size", "mtime"])
def test_mismatched_backing_is_refused_like_uml_moo(tmp, what):
    make_case(3, 64 * SS, seed=13)
    if what == "size":
        with open("backing", "ab") as f:
            f.write(b"x")
    else:
        st = os.stat("backing")
        os.utime("backing", (st.st_atime, st.st_mtime + 5))
    oracle = run(["uml_moo", "cow", "oracle.img"])
    assert oracle.returncode == 1 and f"{what} mismatch" in oracle.stderr.lower()
    r = run([UBDSIM, "moo", "cow", "mine.img"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"{what} mismatch" in r.stderr.lower()
    # the header value comes first in both texts
    assert oracle.stderr.split("(")[1].split(")")[0] == r.stderr.split("(")[1].split(")")[0]
    assert not os.path.exists("mine.img")
    assert [n for n in os.listdir(".") if "tmp" in n] == []


def test_existing_newfile_and_inputs_are_never_replaced(tmp):
    marks, _ = make_case(3, 64 * SS, seed=14)
    with open("taken.img", "wb") as f:
        f.write(b"keep")
    r = run([UBDSIM, "moo", "cow", "taken.img"])
    assert r.returncode == 1 and open("taken.img", "rb").read() == b"keep"
    r = run([UBDSIM, "moo", "-f", "cow", "backing"])
    assert r.returncode == 1 and "same file" in r.stderr
    assert run([UBDSIM, "moo", "-f", "cow", "taken.img"]).returncode == 0
    assert open("taken.img", "rb").read() == model(marks, 64)


def test_one_tib_sparse_backing_merges_without_reading_it(tmp):
    with open("backing", "wb") as f:
        f.truncate(1 << 40)
        f.seek(700 << 30)
        f.write(b"backing data" * 100)
    assert run([UBDSIM, "mkcow", "cow", "backing"]).returncode == 0
    with CowImage.open("cow", writable=True) as image:
        image.write(0, b"A" * SS)
        image.write((1 << 40) - SS, b"Z" * SS)
    r = run([UBDSIM, "info", "--json", "cow"])
    info = json.loads(r.stdout)
    assert info["sectors_marked"] == 2 and info["sectors"] == 1 << 31
    assert info["allocated_bytes"] < 1 << 20
    r = run([UBDSIM, "moo", "--json", "cow", "merged"])
    assert r.returncode == 0, r.stderr
    assert os.path.getsize("merged") == 1 << 40
    assert os.stat("merged").st_blocks * 512 < 1 << 20
    with open("merged", "rb") as f:
        assert f.read(SS) == b"A" * SS
        f.seek(700 << 30)
        assert f.read(1200) == b"backing data" * 100
        f.seek((1 << 40) - SS)
        assert f.read() == b"Z" * SS
    r = run([UBDSIM, "moo", "-d", "cow"])
    assert r.returncode == 0, r.stderr
    with open("backing", "rb") as f:
        f.seek((1 << 40) - SS)
        assert f.read() == b"Z" * SS
    assert os.stat("backing").st_blocks * 512 < 1 << 20


def test_an_interrupted_new_merge_leaves_nothing_behind(tmp):
    make_case(3, 300 * SS, seed=15)

    def interrupt(done, total):
        if done > 10 * SS:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_new("cow", "out.img", chunk_bytes=SS, progress=interrupt)
    assert sorted(os.listdir(".")) == ["backing", "cow"]


def test_cache_unsafe_writes_the_same_image_without_a_host_sync(tmp):
    """moo -t unsafe (qemu-img convert's default output cache mode; uml_moo never syncs) makes
    the same file as the default and as uml_moo, and the sync-logging preload (the host-sync
    oracle of kernel_ref/sync_log.py) sees no fsync of it or of its directory, where the
    default -t writeback fsyncs both."""
    from kernel_ref.sync_log import LOG_VARIABLE, SYNC_CALLS, read_log, require_library
    library = require_library()
    make_case(3, 4 << 20, seed=41)
    assert run(["uml_moo", "cow", "oracle.img"]).returncode == 0
    synced = {}
    for mode in ("writeback", "unsafe"):
        log = tmp / f"{mode}.log"
        env = dict(os.environ, LD_PRELOAD=str(library), **{LOG_VARIABLE: str(log)})
        r = run([UBDSIM, "moo", "-t", mode, "cow", f"{mode}.img"], env=env)
        assert r.returncode == 0, r.stderr
        synced[mode] = [(c.call, os.path.basename(c.path)) for c in read_log(log)
                        if c.call in SYNC_CALLS]
    assert open("unsafe.img", "rb").read() == open("writeback.img", "rb").read() \
        == open("oracle.img", "rb").read()
    assert extent_map("unsafe.img") == extent_map("writeback.img")
    assert synced["unsafe"] == []
    assert ("fsync", os.path.basename(str(tmp))) in synced["writeback"], synced
    assert any(name.startswith(".writeback.img") or name == "writeback.img"
               for call, name in synced["writeback"] if call == "fsync"), synced


def test_cache_mode_goes_with_newfile_only(tmp):
    make_case(3, 1 << 20, seed=42)
    r = run([UBDSIM, "moo", "-t", "unsafe", "-d", "cow"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "-t goes with NEWFILE" in r.stderr
    r = run([UBDSIM, "moo", "-t", "none", "cow", "x.img"])
    assert r.returncode == 2 and not os.path.exists("x.img")
