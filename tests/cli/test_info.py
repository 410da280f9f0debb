"""`ubdsim info` on files built from the spec tables, uml_mkcow and uml_moo run alongside.

Values that the oracles know are taken from them: uml_mkcow writes the file, uml_moo's
acceptance or refusal decides what a "match" is, and the kernel's printk texts come from the
message table that the format work checks against linux.uml.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.cow.builders import UBDSIM, build_cow, random_file, run, spec_geometry


def info(path="cow", *extra):
    r = run([UBDSIM, "info", "--json", *extra, path])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_fresh_uml_mkcow_file(tmp):
    random_file("backing", 4 << 20, seed=1)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    report = info()
    fields = {f["name"]: (f["offset"], f["value"]) for f in report["fields"]}
    st = os.stat("backing")
    assert fields == {"magic": (0, 0x4F4F4F4D), "version": (4, 3), "mtime": (8, int(st.st_mtime)),
                      "size": (12, 4 << 20), "sectorsize": (20, 512), "alignment": (24, 4096),
                      "cow_format": (28, 0), "backing_file": (32, f"{tmp}/backing")}
    assert (report["bitmap_offset"], report["bitmap_len"], report["data_offset"]) == (8192, 1024, 12288)
    assert report["sectors"] == 8192 and report["sectors_marked"] == 0
    assert report["apparent_bytes"] == os.path.getsize("cow") == report["expected_length"]
    assert report["allocated_bytes"] == os.stat("cow").st_blocks * 512
    assert report["backing"] == {"path": f"{tmp}/backing", "present": True, "size": 4 << 20,
                                 "mtime": int(st.st_mtime), "size_match": True,
                                 "mtime_match": True, "grown": False, "error": None}
    assert report["hazards"] == [] and report["kernel_notes"] == []


@pytest.mark.parametrize("version,broken", [(1, False), (2, False), (3, False), (3, True)])
def test_marked_sectors_and_layout_of_every_version(tmp, version, broken):
    random_file("backing", 1003 * 512, seed=version)
    marks = {s: bytes([s % 251 + 1]) * 512 for s in (0, 1, 2, 77, 500, 999)}
    _, bitmap_offset, bitmap_len, data_offset = spec_geometry(version, 1003 * 512, broken=broken)
    build_cow("cow", version, "backing", marks, broken=broken)
    report = info()
    assert (report["bitmap_offset"], report["bitmap_len"], report["data_offset"]) == \
        (bitmap_offset, bitmap_len, data_offset)
    assert report["sectors_marked"] == len(marks)
    hazards = {h["id"] for h in report["hazards"]}
    assert ("rounding_bug" in hazards) == (version < 3)      # 1003 sectors: not a multiple of 8
    assert ("broken_layout" in hazards) == broken
    if broken:
        assert report["kernel_notes"] == [
            "read_cow_header - broken V3 file with 64-bit layout - recovering content."]
    # uml_moo agrees the file is usable, and on the sectors marked
    assert run(["uml_moo", "cow", "merged"]).returncode == 0


def test_backing_status_reports_each_check_separately_as_uml_moo_would_refuse(tmp):
    random_file("backing", 8192, seed=5)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    st = os.stat("backing")
    os.utime("backing", (st.st_atime, st.st_mtime + 100))
    with open("backing", "ab") as f:
        f.write(b"more")
    os.utime("backing", (st.st_atime, st.st_mtime + 100))
    refused = run(["uml_moo", "cow", "merged"])
    assert refused.returncode == 1 and "Size mismatch" in refused.stderr   # uml_moo stops at the first
    b = info()["backing"]
    assert (b["present"], b["size_match"], b["mtime_match"]) == (True, False, False)
    assert (b["size"], b["mtime"]) == (8196, int(st.st_mtime) + 100)
    r = run([UBDSIM, "info", "cow"])
    assert "size match    NO (file 8196)" in r.stdout and "mtime match   NO" in r.stdout


def test_hazards_alignment_zero_bits_past_end_and_bits_after_a_short_bitmap(tmp):
    random_file("backing", 12 * 512, seed=6)            # 12 sectors: V2 bitmap is 1 byte
    build_cow("v2", 2, "backing", {0: b"a" * 512}, extra_bits={4121: 0x02})   # bit of sector 9
    hazards = {h["id"]: h["text"] for h in info("v2")["hazards"]}
    assert "rounding_bug" in hazards and "1 bits are set" in hazards["bits_after_bitmap"]
    build_cow("v3", 3, "backing", {0: b"a" * 512}, extra_bits={8192 + 1: 0xF0})  # sectors 12..15
    assert {h["id"] for h in info("v3")["hazards"]} == {"bits_past_end"}
    build_cow("a0", 3, "backing", {})
    with open("a0", "r+b") as f:
        f.seek(24)
        f.write(bytes(4))
    crashed = run(["uml_moo", "a0", "merged"])
    assert crashed.returncode < 0                       # uml_moo divides by zero (SIGFPE)
    report = info("a0")
    assert [h["id"] for h in report["hazards"]] == ["alignment_zero"]
    assert report["kernel_notes"] == ["read_cow_header - invalid COW header, align == 0"]
    assert report["bitmap_offset"] is None and report["sectors_marked"] is None


def test_truncated_cow_file_is_reported(tmp):
    random_file("backing", 1 << 20, seed=7)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    with open("cow", "r+b") as f:
        f.truncate(8192 + 100)
    report = info()
    assert [h["id"] for h in report["hazards"]] == ["truncated"] and report["sectors_marked"] == 0


def test_one_tib_backing_info_is_instant_and_reads_no_holes(tmp):
    with open("backing", "wb") as f:
        f.truncate(1 << 40)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    report = info()
    assert report["bitmap_len"] == 1 << 28 and report["sectors_marked"] == 0
    assert report["allocated_bytes"] == os.stat("cow").st_blocks * 512 <= 16384
