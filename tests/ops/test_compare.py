"""`ubdsim compare` against `cmp` and `qemu-img compare` of the images `uml_moo` merges.

The COW files are made by uml_mkcow; the merged images by uml_moo; whether two devices are
the same, and where they first differ, is decided by cmp (first differing byte) and by
qemu-img compare (its exact output line and exit status) on those merged raw images.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.cow.builders import UBDSIM, run
from tests.ops.test_map import cow_write, mkcow, read_chars, sparse_backing
from ubdsim.ops.compare import compare_devices

SIZE = 4 << 20
DATA = [(0, 8192), (100 << 10, 300 << 10), (SIZE - 4096, 4096)]
WRITES = [(4096, 4096), (200 << 10, 64 << 10), (3 << 20, 512)]


def moo(cow: str, out: str) -> None:
    done = run(["uml_moo", cow, out])
    assert done.returncode == 0, done.stdout + done.stderr


def cmp_first_byte(a: str, b: str) -> int | None:
    """cmp's first differing byte, 0-based (cmp prints it 1-based), or None when equal."""
    done = run(["cmp", a, b])
    if done.returncode == 0:
        return None
    assert done.returncode == 1, done.stderr
    return int(done.stdout.split("byte ")[1].split(",")[0]) - 1


def qemu_compare(*args: str):
    done = run(["qemu-img", "compare", *args])
    return done.returncode, done.stdout.splitlines()


def ubdsim_compare(*args: str):
    done = run([UBDSIM, "compare", *args])
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout.splitlines()


def two_cows(change: tuple[int, bytes] | None = None) -> None:
    """c1.cow and c2.cow over back.img with the same writes (c2 optionally one more), and
    their uml_moo merges m1.img and m2.img."""
    sparse_backing("back.img", SIZE, DATA)
    for cow in ("c1.cow", "c2.cow"):
        mkcow(cow, "back.img")
        cow_write(cow, WRITES)
    if change is not None:
        cow_write("c2.cow", [(change[0], 512)], change[1][0])
    moo("c1.cow", "m1.img")
    moo("c2.cow", "m2.img")


def test_same_writes_are_identical_as_cmp_and_qemu_img_say(tmp):
    two_cows()
    assert cmp_first_byte("m1.img", "m2.img") is None
    assert qemu_compare("m1.img", "m2.img") == (0, ["Images are identical."])
    assert ubdsim_compare("c1.cow", "c2.cow") == (0, ["Images are identical."])
    assert ubdsim_compare("c1.cow", "m2.img") == (0, ["Images are identical."])   # COW vs raw
    assert ubdsim_compare("m1.img", "m2.img") == (0, ["Images are identical."])


@pytest.mark.parametrize("sector,byte", [(0, 0x11), (7, 0x00), (400, 0x77), (SIZE // 512 - 1, 0x01)])
def test_one_sector_changed_differs_at_cmps_offset(tmp, sector, byte):
    two_cows(change=(sector * 512, bytes([byte])))
    first = cmp_first_byte("m1.img", "m2.img")
    assert first is not None and first // 512 == sector
    qemu = qemu_compare("m1.img", "m2.img")
    assert qemu == (1, [f"Content mismatch at offset {sector * 512}!"])
    assert ubdsim_compare("c1.cow", "c2.cow") == qemu
    assert ubdsim_compare("m1.img", "c2.cow") == qemu
    done = run([UBDSIM, "compare", "--json", "c1.cow", "c2.cow"])
    result = json.loads(done.stdout)
    assert done.returncode == 1
    assert (result["reason"], result["offset"], result["first_differing_byte"]) == \
        ("content", sector * 512, first)


def test_sizes_differ_like_qemu_img(tmp):
    two_cows()
    with open("m2.img", "r+b") as f:                    # m2: m1 plus 1 MiB of zeros (a hole)
        f.truncate(SIZE + (1 << 20))
    for pair in (("m1.img", "m2.img"), ("m2.img", "m1.img")):
        expected = (0, ["Warning: Image size mismatch!", "Images are identical."])
        assert qemu_compare(*pair) == expected
        assert ubdsim_compare(*pair) == expected
    assert ubdsim_compare("c1.cow", "m2.img") == expected
    strict = (1, ["Strict mode: Image size mismatch!"])
    assert qemu_compare("-s", "m1.img", "m2.img") == strict
    assert ubdsim_compare("-s", "c1.cow", "m2.img") == strict
    with open("m2.img", "r+b") as f:                    # a byte in the extra part
        f.seek(SIZE + 1000)
        f.write(b"X")
    qemu = qemu_compare("m1.img", "m2.img")
    assert qemu == (1, ["Warning: Image size mismatch!", f"Content mismatch at offset {SIZE + 512}!"])
    assert ubdsim_compare("c1.cow", "m2.img") == qemu


def test_strict_mode_fails_on_block_status_where_qemu_img_does(tmp):
    with open("holes.img", "wb") as f:
        f.truncate(1 << 20)
    with open("zeros.img", "wb") as f:
        f.truncate(1 << 20)
        f.seek(40960)
        f.write(bytes(12288))                           # stored zeros: data, not a hole
    assert qemu_compare("holes.img", "zeros.img")[0] == 0
    assert ubdsim_compare("holes.img", "zeros.img") == (0, ["Images are identical."])
    assert qemu_compare("-s", "holes.img", "zeros.img")[0] == 1
    # qemu-img names offset 0 here (its internal status word differs there: one run reaches
    # the end of the file); ubdsim names the first byte that is a hole on one side only.
    assert ubdsim_compare("-s", "holes.img", "zeros.img") == \
        (1, ["Strict mode: Offset 40960 block status mismatch!"])


def test_quiet_prints_nothing_and_keeps_the_status(tmp):
    two_cows(change=(0, b"\x42"))
    done = run([UBDSIM, "compare", "-q", "c1.cow", "c2.cow"])
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "")


def test_backing_overrides(tmp):
    two_cows()
    os.rename("back.img", "moved.img")
    done = run([UBDSIM, "compare", "-b", "moved.img", "-B", "moved.img", "c1.cow", "c2.cow"])
    assert (done.returncode, done.stdout) == (0, "Images are identical.\n"), done.stderr


@pytest.mark.parametrize("case", ["missing_backing", "missing_device", "size_mismatch", "qcow2"])
def test_an_error_is_exit_2_and_one_line(tmp, case):
    two_cows()
    a, b = "c1.cow", "c2.cow"
    if case == "missing_backing":
        os.rename("back.img", "gone.img")
        expected = "does not exist"
    elif case == "missing_device":
        b, expected = "nope.img", "No such file or directory"
        assert run(["qemu-img", "compare", "m1.img", "nope.img"]).returncode == 2
    elif case == "size_mismatch":
        with open("back.img", "r+b") as f:
            f.truncate(SIZE + 512)
        expected = "Size mismatch"
    else:
        assert run(["qemu-img", "create", "-q", "-f", "qcow2", "x.qcow2", "4M"]).returncode == 0
        b, expected = "x.qcow2", "qcow2"
    done = run([UBDSIM, "compare", a, b])
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ubdsim compare: error: ") and expected in lines[0], done.stderr


def test_reads_only_what_differs_between_cows_over_one_backing_file(tmp):
    sparse_backing("back.img", 16 << 20, [(0, 16 << 20)])        # all data: nothing is a hole
    for cow, sector in (("c1.cow", 0), ("c2.cow", 100)):
        mkcow(cow, "back.img")
        cow_write(cow, [(sector * 512, 8 * 512)], 0x33)
    result = compare_devices("c1.cow", "c2.cow")
    assert not result.identical and result.offset == 0
    # sectors 0-7: c1's COW data against c2's backing bytes, both read, and nothing else.
    assert result.bytes_read <= 2 * 8 * 512
    same = compare_devices("c1.cow", "c1.cow")
    assert same.identical and same.bytes_read == 0 and same.bytes_skipped == 16 << 20


def test_one_tib_devices_compare_without_reading_holes(tmp):
    tib = 1 << 40
    sparse_backing("big.img", tib, [(0, 4096), (tib // 2, 1 << 20)])
    mkcow("c1.cow", "big.img")
    mkcow("c2.cow", "big.img")
    for cow in ("c1.cow", "c2.cow"):
        cow_write(cow, [(tib // 4, 4096), (tib - 512, 512)])
    cow_write("c2.cow", [(tib // 3 // 512 * 512, 512)], 0)      # marked zeros over a hole: equal
    blocks = [os.stat(p).st_blocks for p in ("c1.cow", "c2.cow", "big.img")]
    before = read_chars()
    result = compare_devices("c1.cow", "c2.cow")
    assert read_chars() - before < 256 << 10
    assert result.identical and result.bytes_read <= 2 * (4096 + 512 + 512)
    assert [os.stat(p).st_blocks for p in ("c1.cow", "c2.cow", "big.img")] == blocks
    cow_write("c2.cow", [(tib - 512, 512)], 0x99)
    assert ubdsim_compare("c1.cow", "c2.cow") == (1, [f"Content mismatch at offset {tib - 512}!"])
