"""`ubdsim convert` judged by the real tools: uml_moo and cmp for raw output, qemu-img
(check, info, map, compare, convert) for qcow2 output and input, ubdsim map/compare on top.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.cow.builders import UBDSIM, extent_map, run
from tests.ops.test_map import (CLUSTER, cow_write, mkcow, qcow2_overlay, qemu_map,
                                sparse_backing, ubdsim_map)

SIZE = 8 << 20
DATA = [(0, 8192), (100 << 10, 300 << 10), (2 << 20, 1 << 20), (SIZE - 4096, 4096)]
# Sector-grain writes: unaligned to clusters on purpose (qcow2 widens them to clusters).
WRITES = [(0, 512), (4096, 3 * 512), (150 << 10, 100 << 10), (2 << 20, 64 << 10),
          (5 << 20, 512), (SIZE - 512, 512)]
ZERO_WRITES = [(2 << 20 | 256 << 10, 8192)]          # marked zeros over backing data


def ubdsim(*args: str) -> dict:
    done = run([UBDSIM, *args])
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if "--json" in args else {}


def cmp(a: str, b: str) -> None:
    done = run(["cmp", a, b])
    assert done.returncode == 0, done.stdout + done.stderr


def make_cow() -> None:
    sparse_backing("back.img", SIZE, DATA)
    mkcow("c.cow", "back.img")
    cow_write("c.cow", WRITES)
    cow_write("c.cow", ZERO_WRITES, 0)


def marked_clusters(writes) -> list[tuple[int, int]]:
    """The writes widened to whole qcow2 clusters, merged: what qemu allocates for them."""
    out: list[list[int]] = []
    for off, length in sorted(writes):
        lo, hi = off // CLUSTER * CLUSTER, -(-(off + length) // CLUSTER) * CLUSTER
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi - lo) for lo, hi in out]


def depth0(records) -> list[tuple[int, int]]:
    """The depth-0 runs, adjacent ones merged, whatever their flags."""
    out: list[list[int]] = []
    for r in records:
        if r["depth"] == 0 and r["present"]:
            if out and out[-1][0] + out[-1][1] == r["start"]:
                out[-1][1] += r["length"]
            else:
                out.append([r["start"], r["length"]])
    return [tuple(x) for x in out]


def no_temporaries() -> None:
    assert [name for name in os.listdir(".") if name.endswith(".ubdsim-tmp")] == []


def test_cow_to_raw_equals_uml_moo_byte_for_byte(tmp):
    make_cow()
    assert run(["uml_moo", "c.cow", "moo.img"]).returncode == 0
    summary = ubdsim("convert", "--json", "c.cow", "out.img")
    cmp("moo.img", "out.img")
    assert summary["output_format"] == "raw" and summary["size"] == SIZE
    # sparse, as `ubdsim moo` writes it: the same holes (uml_moo skips zero sectors one by one)
    ubdsim("moo", "c.cow", "ubdsim-moo.img")
    assert extent_map("out.img") == extent_map("ubdsim-moo.img")
    no_temporaries()


def test_cow_to_qcow2_is_an_overlay_of_the_marked_clusters(tmp):
    make_cow()
    assert run(["uml_moo", "c.cow", "moo.img"]).returncode == 0
    summary = ubdsim("convert", "--json", "-O", "qcow2", "c.cow", "c.qcow2")
    assert summary["backing_name"] == os.path.abspath("back.img")
    check = run(["qemu-img", "check", "c.qcow2"])
    assert check.returncode == 0, check.stdout + check.stderr
    info = json.loads(run(["qemu-img", "info", "--output=json", "c.qcow2"]).stdout)
    assert (info["format"], info["virtual-size"], info["backing-filename"],
            info["backing-filename-format"]) == ("qcow2", SIZE, os.path.abspath("back.img"), "raw")
    assert depth0(qemu_map("c.qcow2")) == marked_clusters(WRITES + ZERO_WRITES)
    # qemu's own reading of the overlay is uml_moo's merge of the COW file
    assert run(["qemu-img", "compare", "c.qcow2", "moo.img"]).stdout == "Images are identical.\n"
    assert run(["qemu-img", "convert", "-O", "raw", "c.qcow2", "q.img"]).returncode == 0
    cmp("moo.img", "q.img")
    no_temporaries()


def test_cow_qcow2_cow_round_trip_keeps_the_device(tmp):
    make_cow()
    ubdsim("convert", "-O", "qcow2", "c.cow", "c.qcow2")
    summary = ubdsim("convert", "--json", "-O", "cow", "c.qcow2", "back.cow")
    assert summary["backing_name"] == os.path.abspath("back.img")
    done = run([UBDSIM, "compare", "c.cow", "back.cow"])
    assert (done.returncode, done.stdout) == (0, "Images are identical.\n"), done.stderr
    assert run(["uml_moo", "c.cow", "a.img"]).returncode == 0
    assert run(["uml_moo", "back.cow", "b.img"]).returncode == 0    # uml_moo reads our COW file
    ubdsim("convert", "back.cow", "c.img")
    assert run(["qemu-img", "compare", "a.img", "b.img"]).stdout == "Images are identical.\n"
    assert run(["qemu-img", "compare", "a.img", "c.img"]).stdout == "Images are identical.\n"
    cmp("a.img", "b.img")
    # the new COW file marks whole clusters: where qemu-img map shows depth 0
    assert depth0(ubdsim_map("back.cow")) == depth0(qemu_map("c.qcow2"))
    info = run([UBDSIM, "info", "--json", "back.cow"])
    report = json.loads(info.stdout)
    assert report["version"] == 3 and report["backing"]["size_match"] and report["backing"]["mtime_match"]


def test_qcow2_overlay_written_by_qemu_io_to_cow(tmp):
    sparse_backing("back.img", SIZE, DATA)
    qcow2_overlay("ov.qcow2", "back.img", [(1000, 3000), (300 << 10, 200 << 10), (SIZE - 100, 100)])
    done = run(["qemu-io", "-c", "write -z 1M 64k", "-c", "write -P 0 6M 64k", "ov.qcow2"])
    assert done.returncode == 0, done.stderr
    ubdsim("convert", "-O", "cow", "ov.qcow2", "ov.cow")
    theirs, ours = qemu_map("ov.qcow2"), ubdsim_map("ov.cow")
    assert depth0(ours) == depth0(theirs)
    assert [r["source"] for r in ours if r["depth"] == 0] and \
        {r["source"] for r in ours if r["depth"] == 0} == {"cow"}
    # the zero cluster written with -z is marked and stays a hole: zero at depth 0
    assert any(r["start"] == 1 << 20 and r["depth"] == 0 and r["zero"] for r in ours)
    assert run(["qemu-img", "convert", "-O", "raw", "ov.qcow2", "q.img"]).returncode == 0
    assert run(["uml_moo", "ov.cow", "m.img"]).returncode == 0
    cmp("q.img", "m.img")
    # uml_mkcow's header for the same backing file is the new COW file's header
    mkcow("ref.cow", "back.img")
    with open("ref.cow", "rb") as a, open("ov.cow", "rb") as b:
        assert a.read(4128) == b.read(4128)
    assert os.path.getsize("ref.cow") == os.path.getsize("ov.cow")


def test_qcow2_to_raw_equals_qemu_img_convert(tmp):
    sparse_backing("back.img", SIZE, DATA)
    qcow2_overlay("ov.qcow2", "back.img", [(0, 4096), (3 << 20, 1 << 20)])
    ubdsim("convert", "ov.qcow2", "mine.img")
    assert run(["qemu-img", "convert", "-O", "raw", "ov.qcow2", "q.img"]).returncode == 0
    cmp("mine.img", "q.img")


def test_relative_backing_file_name_in_the_overlay(tmp):
    make_cow()
    os.mkdir("out")
    os.symlink("../back.img", "out/base.img")
    ubdsim("convert", "-O", "qcow2", "--backing-file", "base.img", "c.cow", "out/c.qcow2")
    info = json.loads(run(["qemu-img", "info", "--output=json", "out/c.qcow2"]).stdout)
    assert info["backing-filename"] == "base.img"
    assert run(["uml_moo", "c.cow", "moo.img"]).returncode == 0
    assert run(["qemu-img", "compare", "out/c.qcow2", "moo.img"]).returncode == 0


def test_grown_cow_file_converts_to_the_grown_disk(tmp):
    sparse_backing("back.img", 4 << 20, [(0, 1 << 20)])
    guest = run([UBDSIM, "run", "--kernel", "2.4", "ubd0=c.cow,back.img,8M", "--", "sh", "-c",
                 "printf grown | dd of=/dev/ubd0 bs=512 seek=12000 conv=notrunc"])
    assert guest.returncode == 0, guest.stdout + guest.stderr
    ubdsim("moo", "c.cow", "moo.img")
    ubdsim("convert", "c.cow", "raw.img")
    cmp("moo.img", "raw.img")
    ubdsim("convert", "-O", "qcow2", "c.cow", "c.qcow2")
    assert run(["qemu-img", "compare", "c.qcow2", "moo.img"]).stdout == "Images are identical.\n"


@pytest.mark.parametrize("case", ["exists", "missing_backing", "no_backing_qcow2", "cow_to_cow",
                                  "backing_file_mismatch", "backing_file_with_raw"])
def test_refusals_are_one_line_and_leave_nothing(tmp, case):
    make_cow()
    args, expected = ["-O", "qcow2", "c.cow", "out.qcow2"], None
    if case == "exists":
        with open("out.qcow2", "w") as f:
            f.write("keep me")
        expected = "already exists"
    elif case == "missing_backing":
        os.rename("back.img", "gone.img")
        expected = "does not exist"
    elif case == "no_backing_qcow2":
        assert run(["qemu-img", "create", "-q", "-f", "qcow2", "alone.qcow2", "1M"]).returncode == 0
        args, expected = ["-O", "cow", "alone.qcow2", "out.qcow2"], "without a backing file"
    elif case == "cow_to_cow":
        args, expected = ["-O", "cow", "c.cow", "out.qcow2"], "converts qcow2 overlays"
    elif case == "backing_file_mismatch":
        sparse_backing("other.img", SIZE + 512, [])
        args, expected = ["-O", "qcow2", "--backing-file", "other.img", "c.cow", "out.qcow2"], "Size mismatch"
    else:
        args, expected = ["-O", "qcow2", "--backing-file", "x", "back.img", "out.qcow2"], "no backing file"
    done = run([UBDSIM, "convert", *args])
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ubdsim convert: error: ") and expected in lines[0], done.stderr
    if case == "exists":
        assert open("out.qcow2").read() == "keep me"
    else:
        assert not os.path.exists("out.qcow2")
    no_temporaries()


def test_force_replaces_and_raw_source_to_qcow2(tmp):
    sparse_backing("back.img", SIZE, DATA)
    with open("out.qcow2", "w") as f:
        f.write("old")
    ubdsim("convert", "-f", "-O", "qcow2", "back.img", "out.qcow2")
    info = json.loads(run(["qemu-img", "info", "--output=json", "out.qcow2"]).stdout)
    assert "backing-filename" not in info
    assert run(["qemu-img", "compare", "out.qcow2", "back.img"]).stdout == "Images are identical.\n"
    # only the raw image's data runs were written: its holes stay unallocated clusters
    data = [r for r in ubdsim_map("back.img") if r["data"]]
    assert [(r["start"], r["length"]) for r in data] == DATA
    written = [r for r in qemu_map("out.qcow2") if r["data"]]
    assert marked_clusters([(r["start"], r["length"]) for r in written]) == marked_clusters(DATA)


@pytest.mark.parametrize("version,broken", [(1, False), (2, False), (3, False), (3, True)])
def test_every_header_version_converts_as_uml_moo_merges(tmp, version, broken):
    from tests.cow.builders import build_cow
    sparse_backing("back.img", 1 << 20, [(0, 4096), (300 << 10, 100 << 10)])
    marks = {0: b"\x01" * 512, 9: b"\x02" * 512, 700: bytes(512), 2047: b"\x03" * 512}
    build_cow("c.cow", version, "back.img", marks, broken=broken)
    assert run(["uml_moo", "c.cow", "moo.img"]).returncode == 0
    ubdsim("convert", "c.cow", "out.img")
    cmp("moo.img", "out.img")
    ubdsim("convert", "-O", "qcow2", "c.cow", "c.qcow2")
    assert run(["qemu-img", "compare", "c.qcow2", "moo.img"]).stdout == "Images are identical.\n"


def test_rounding_bug_sectors_come_from_the_backing_file_as_moo_takes_them(tmp):
    from tests.cow.builders import build_cow
    size = 1003 * 512
    sparse_backing("back.img", size, [(0, size)])
    build_cow("c.cow", 2, "back.img", {0: b"\x05" * 512, 1001: b"\x06" * 512})  # 1001: no bit
    ubdsim("moo", "c.cow", "moo.img")
    ubdsim("convert", "c.cow", "out.img")
    cmp("moo.img", "out.img")


def test_partial_last_sector_survives_the_round_trip(tmp):
    size = (4 << 20) + 100
    sparse_backing("back.img", size, [(0, 8192), (size - 4000, 4000)])
    mkcow("c.cow", "back.img")
    cow_write("c.cow", [(0, 512), (size - 100 - 512, 512)])
    summary = ubdsim("convert", "--json", "-O", "qcow2", "c.cow", "c.qcow2")
    assert summary["size"] == size
    ubdsim("convert", "-O", "cow", "c.qcow2", "back.cow")
    done = run([UBDSIM, "compare", "c.cow", "back.cow"])
    assert (done.returncode, done.stdout) == (0, "Images are identical.\n"), done.stderr
    ubdsim("convert", "c.cow", "a.img")
    assert os.path.getsize("a.img") == size                     # ubdsim keeps the partial sector
    # qemu sizes images in whole sectors: the overlay is 412 bytes longer, all zeros
    theirs = run(["qemu-img", "compare", "a.img", "c.qcow2"])
    assert (theirs.returncode, theirs.stdout) == (0, "Images are identical.\n")
    ubdsim("convert", "c.qcow2", "q.img")
    done = run([UBDSIM, "compare", "a.img", "q.img"])
    assert (done.returncode, done.stdout) == (0, "Warning: Image size mismatch!\nImages are identical.\n")


def test_overlay_whose_backing_moved_converts_with_b(tmp):
    sparse_backing("back.img", SIZE, DATA)
    qcow2_overlay("ov.qcow2", "back.img", [(0, 4096), (3 << 20, 1 << 20)])
    assert run(["qemu-img", "convert", "-O", "raw", "ov.qcow2", "q.img"]).returncode == 0
    os.rename("back.img", "moved.img")
    refused = run([UBDSIM, "convert", "-O", "cow", "ov.qcow2", "ov.cow"])
    assert refused.returncode == 1 and "use -b" in refused.stderr and len(refused.stderr.splitlines()) == 1
    summary = ubdsim("convert", "--json", "-O", "cow", "-b", "moved.img", "ov.qcow2", "ov.cow")
    assert summary["backing_name"] == os.path.abspath("moved.img")
    assert run(["uml_moo", "ov.cow", "m.img"]).returncode == 0
    cmp("q.img", "m.img")
    ubdsim("convert", "-b", "moved.img", "ov.qcow2", "r.img")
    cmp("q.img", "r.img")
