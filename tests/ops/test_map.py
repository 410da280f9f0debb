"""`ubdsim map` against `qemu-img map`: a qcow2 overlay and a UML COW file with the same
guest writes over the same raw backing file must map to the same runs.

The qcow2 overlay is built by qemu-img and written by qemu-io; the COW file is made by
uml_mkcow and written either by a guest (`ubdsim run --kernel 6.1 ... dd oflag=direct`) or by
CowImage.write. Writes are whole 64 KiB clusters, so that qcow2's cluster grain and the COW
file's sector grain allocate the same bytes. Fields that mean the same thing in both formats
(start, length, depth, present, zero, data) are compared; offsets differ by format, so COW
offsets are checked against the COW geometry (data_offset + start) and backing offsets
against the device offset, which qemu-img reports too.
"""
from __future__ import annotations

import json
import os
import stat

import pytest

from tests.cow.builders import UBDSIM, run
from ubdsim.cow.image import CowImage
from ubdsim.ops.map import map_device

CLUSTER = 64 << 10
PATTERN = 0x5A


# -- helpers shared with test_compare.py and test_convert.py (imported by name) ---------------
def sparse_backing(path: str, size: int, data: list[tuple[int, int]], seed: int = 1) -> None:
    """A raw file of `size` bytes: seeded random bytes at the (offset, length) `data` ranges,
    holes everywhere else; mtime fixed so any later write would show."""
    import random
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in data:
            f.seek(offset)
            f.write(rng.randbytes(length))
    os.utime(path, (1_000_000_000, 1_000_000_000))


def mkcow(cow: str, backing: str) -> None:
    done = run(["uml_mkcow", cow, backing])
    assert done.returncode == 0, done.stdout + done.stderr


def cow_write(cow: str, writes: list[tuple[int, int]], byte: int = PATTERN) -> None:
    with CowImage.open(cow, writable=True) as image:
        for offset, length in writes:
            image.write(offset, bytes([byte]) * length)


def qcow2_overlay(path: str, backing: str, writes: list[tuple[int, int]],
                  byte: int = PATTERN) -> None:
    done = run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", os.path.abspath(backing),
                "-F", "raw", path])
    assert done.returncode == 0, done.stderr
    if writes:
        cmds = [arg for off, length in writes for arg in ("-c", f"write -P {byte:#x} {off} {length}")]
        done = run(["qemu-io", *cmds, path])
        assert done.returncode == 0, done.stdout + done.stderr


def qemu_map(spec: str) -> list[dict]:
    done = run(["qemu-img", "map", "--output=json", spec])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ubdsim_map(device: str, *extra: str) -> list[dict]:
    done = run([UBDSIM, "map", "--json", *extra, device])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def meaning(records: list[dict]) -> list[tuple]:
    """(start, length, depth, present, zero, data) runs, adjacent equal ones merged: what
    both formats mean, whatever their host offsets."""
    out: list[list] = []
    for r in records:
        key = (r["depth"], r["present"], r["zero"], r["data"])
        if out and tuple(out[-1][2:]) == key and out[-1][0] + out[-1][1] == r["start"]:
            out[-1][1] += r["length"]
        else:
            out.append([r["start"], r["length"], *key])
    return [tuple(x) for x in out]


def data_offset(cow: str) -> int:
    with CowImage.open(cow) as image:
        return image.geometry.data_offset


def read_chars() -> int:
    """Bytes this process has read with read(2)/pread(2) so far (/proc/self/io rchar)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


# -- the backing file and the writes every test here uses -------------------------------------
SIZE = 8 << 20
BACKING_DATA = [(0, 4096), (10 * CLUSTER, 2 * CLUSTER), (40 * CLUSTER, 3 * CLUSTER + 4096),
                (SIZE - CLUSTER, CLUSTER)]
WRITES = [(0, CLUSTER), (3 * CLUSTER, 2 * CLUSTER), (11 * CLUSTER, 3 * CLUSTER),
          (41 * CLUSTER, CLUSTER), (SIZE - CLUSTER, CLUSTER)]


def _check_against_qemu(cow: str, overlay: str) -> list[dict]:
    ours, theirs = ubdsim_map(cow), qemu_map(overlay)
    assert meaning(ours) == meaning(theirs)
    base = data_offset(cow)
    for r in ours:
        assert r["offset"] == (base + r["start"] if r["depth"] == 0 else r["start"]), r
        assert r["file"] == (cow if r["depth"] == 0 else os.path.abspath("back.img"))
        assert r["source"] == ("cow" if r["depth"] == 0 else "backing")
    for r in theirs:
        if r["depth"] == 1:
            assert r["offset"] == r["start"]
    return ours


def test_map_equals_qemu_img_map_of_a_qcow2_overlay_with_the_same_writes(tmp):
    sparse_backing("back.img", SIZE, BACKING_DATA)
    mkcow("c.cow", "back.img")
    cow_write("c.cow", WRITES)
    qcow2_overlay("ov.qcow2", "back.img", WRITES)
    ours = _check_against_qemu("c.cow", "ov.qcow2")
    assert [(r["start"], r["length"]) for r in ours if r["depth"] == 0] == WRITES


def test_map_of_a_cow_file_a_guest_wrote_equals_qemu_img_map(tmp):
    sparse_backing("back.img", SIZE, BACKING_DATA)
    with open("pattern.bin", "wb") as f:
        f.write(bytes([PATTERN]) * 3 * CLUSTER)
    guest = run([UBDSIM, "run", "--kernel", "6.1", "ubd0=c.cow,back.img", "--", "sh", "-c",
                 "dd if=pattern.bin of=/dev/ubda bs=64k seek=3 count=2 oflag=direct conv=notrunc"
                 " && dd if=pattern.bin of=/dev/ubda bs=64k seek=11 count=3 oflag=direct conv=notrunc"])
    assert guest.returncode == 0, guest.stdout + guest.stderr
    qcow2_overlay("ov.qcow2", "back.img", [(3 * CLUSTER, 2 * CLUSTER), (11 * CLUSTER, 3 * CLUSTER)])
    _check_against_qemu("c.cow", "ov.qcow2")


def test_human_output_is_qemu_img_maps_format(tmp):
    sparse_backing("back.img", SIZE, BACKING_DATA)
    mkcow("c.cow", "back.img")
    cow_write("c.cow", WRITES)
    qcow2_overlay("ov.qcow2", "back.img", WRITES)
    ours = run([UBDSIM, "map", "c.cow"])
    theirs = run(["qemu-img", "map", "ov.qcow2"])
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    mine, qemu = ours.stdout.splitlines(), theirs.stdout.splitlines()
    assert mine[0] == qemu[0] == "Offset          Length          Mapped to       File"
    # Same runs (offset and length columns); the backing file's lines are equal to the byte.
    assert [line[:32] for line in mine[1:]] == [line[:32] for line in qemu[1:]]
    backing_lines = [line for line in qemu[1:] if line.endswith("back.img")]
    assert backing_lines and all(line in mine for line in backing_lines)
    base = data_offset("c.cow")
    for line in mine[1:]:
        start, _, mapped, name = line.split(maxsplit=3)
        if name == "c.cow":
            assert int(mapped, 16) == base + int(start, 16)
    assert mine[1].startswith("0               ")   # C's %#x prints 0 as "0", as qemu-img does


def test_raw_image_maps_as_qemu_img_maps_it(tmp):
    sparse_backing("back.img", SIZE, BACKING_DATA)
    ours, theirs = ubdsim_map("back.img"), qemu_map("back.img")
    assert meaning(ours) == meaning(theirs)
    assert [r["offset"] for r in ours] == [r["start"] for r in ours]
    assert {r["source"] for r in ours} == {"raw"} and {r["depth"] for r in ours} == {0}


def test_start_offset_and_max_length_clip_the_map(tmp):
    sparse_backing("back.img", SIZE, BACKING_DATA)
    mkcow("c.cow", "back.img")
    cow_write("c.cow", WRITES)
    records = ubdsim_map("c.cow", "--start-offset", "200k", "--max-length", "1M")
    assert records[0]["start"] == 200 << 10
    assert sum(r["length"] for r in records) == 1 << 20
    whole = {(r["start"], r["depth"]) for r in ubdsim_map("c.cow")}
    assert all((r["start"], r["depth"]) in whole for r in records[1:])


def test_one_tib_sparse_cow_file_maps_without_reading_holes(tmp):
    tib = 1 << 40
    sparse_backing("big.img", tib, [(0, 4096), (tib // 2, 1 << 20)])
    mkcow("c.cow", "big.img")
    marks = [(0, 512), (tib // 4, 8 * 512), (tib - 512, 512)]
    cow_write("c.cow", marks)
    blocks = (os.stat("c.cow").st_blocks, os.stat("big.img").st_blocks)
    before = read_chars()
    report = map_device("c.cow")
    read = read_chars() - before
    assert read < 64 << 10, f"{read} bytes read to map a 1 TiB device"
    assert (os.stat("c.cow").st_blocks, os.stat("big.img").st_blocks) == blocks
    cow_runs = [(e.start, e.length) for e in report.entries if e.source == "cow"]
    assert cow_runs == marks
    assert len(report.entries) <= 12
    assert sum(e.length for e in report.entries) == tib
    assert ubdsim_map("c.cow") == report.records()          # the command prints the same
    # qemu-img agrees on the 1 TiB raw backing file itself.
    assert meaning(ubdsim_map("big.img")) == meaning(qemu_map("big.img"))


def test_grown_cow_file_maps_its_tail(tmp):
    sparse_backing("back.img", 4 << 20, [(0, CLUSTER)])
    guest = run([UBDSIM, "run", "--kernel", "2.4", "ubd0=c.cow,back.img,8M", "--", "true"])
    assert guest.returncode == 0, guest.stdout + guest.stderr
    assert "*** Resizing cow file: " in guest.stderr
    records = ubdsim_map("c.cow")
    tail = [r for r in records if r["source"] == "tail"]
    assert [(r["start"], r["length"], r["depth"], r["zero"], r["data"]) for r in tail] == \
        [(4 << 20, 4 << 20, 0, True, False)]
    assert tail[0]["offset"] == data_offset("c.cow") + (4 << 20)
    assert sum(r["length"] for r in records) == 8 << 20


@pytest.mark.parametrize("case", ["missing_backing", "qcow2", "raw_with_b", "fifo", "mtime"])
def test_bad_input_is_one_line_and_exit_1(tmp, case):
    sparse_backing("back.img", 1 << 20, [(0, 4096)])
    mkcow("c.cow", "back.img")
    device, extra = "c.cow", []
    if case == "missing_backing":
        os.rename("back.img", "gone.img")
        expected = 'backing file "'
    elif case == "qcow2":
        qcow2_overlay("ov.qcow2", "back.img", [])
        device, expected = "ov.qcow2", "is a qcow2 image"
    elif case == "raw_with_b":
        device, extra, expected = "back.img", ["-b", "back.img"], "is a raw image"
    elif case == "fifo":
        os.mkfifo("pipe")
        device, expected = "pipe", "FIFO"
    else:
        os.utime("back.img", (2_000_000_000, 2_000_000_000))
        expected = "mtime mismatch"
    done = run([UBDSIM, "map", *extra, device])
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ubdsim map: error: ") and expected in lines[0], done.stderr
    if case == "fifo":
        assert stat.S_ISFIFO(os.stat("pipe").st_mode)
