"""CowImage: the tools' read path through the bitmap, and its chunked, hole-skipping scans.

The COW files are built from the spec tables (tests/cow/builders.py); the expected device
content is the backing file with the marked sectors replaced, and uml_moo, run here, must
produce the same bytes for the sectors it handles.
"""
from __future__ import annotations

import os
import random

from tests.cow.builders import build_cow, random_file, run
from ubdsim.cow.image import CowImage, data_extents, merge_intervals

SS = 512


def test_reads_through_the_bitmap_at_any_offset_and_length(tmp):
    rng = random.Random(1)
    random_file("backing", 200 * SS, seed=1)
    marks = {s: rng.randbytes(SS) for s in rng.sample(range(200), 50)}
    build_cow("cow", 3, "backing", marks)
    assert run(["uml_moo", "cow", "oracle"]).returncode == 0
    device = open("oracle", "rb").read()
    fd = os.open("backing", os.O_RDONLY)
    try:
        with CowImage.open("cow") as image:
            assert image.read(0, 200 * SS, fd) == device
            for _ in range(200):
                offset = rng.randrange(200 * SS)
                length = rng.randrange(200 * SS - offset + 1)
                assert image.read(offset, length, fd) == device[offset:offset + length]
            # past the end: zeros, like do_io()'s zero-filled short reads
            assert image.read(199 * SS, 2 * SS, fd) == device[199 * SS:] + bytes(SS)
    finally:
        os.close(fd)


def test_write_marks_sectors_and_uml_moo_sees_them(tmp):
    random_file("backing", 64 * SS, seed=2)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    with CowImage.open("cow", writable=True) as image:
        image.write(3 * SS, b"x" * 2 * SS)
        image.write(63 * SS, b"y" * SS)
        assert list(image.marked_runs()) == [(3, 2), (63, 1)]
    assert run(["uml_moo", "cow", "merged"]).returncode == 0
    merged, backing = open("merged", "rb").read(), open("backing", "rb").read()
    assert merged == backing[:3 * SS] + b"x" * 2 * SS + backing[5 * SS:63 * SS] + b"y" * SS


def test_chunked_scan_of_a_bitmap_with_data_and_holes(tmp):
    # a 1 TiB device whose 256 MiB bitmap has two allocated islands far apart
    with open("backing", "wb") as f:
        f.truncate(1 << 40)
    assert run(["uml_mkcow", "cow", "backing"]).returncode == 0
    with CowImage.open("cow", writable=True) as image:
        image.write(5 * SS, b"a" * 3 * SS)
        image.write((1 << 39), b"b" * 16 * SS)          # sector 2**30
        image.write((1 << 40) - SS, b"c" * SS)
        expected = [(5, 3), (1 << 30, 16), ((1 << 31) - 1, 1)]
        assert list(image.marked_runs()) == expected
        assert list(image.marked_runs(scan_bytes=1)) == expected
        assert list(image.marked_runs(first=6, limit=(1 << 30) + 3)) == [(6, 2), (1 << 30, 3)]
        islands = list(image.bitmap_data_ranges())
        assert sum(hi - lo for lo, hi in islands) <= 3 * 4096 * 2
        assert image.count_marked() == 20
    assert os.stat("cow").st_blocks * 512 < 1 << 20


def test_extent_helpers(tmp):
    with open("f", "wb") as f:
        f.truncate(1 << 20)
        f.seek(4096 * 10)
        f.write(b"z" * 4096)
    fd = os.open("f", os.O_RDONLY)
    try:
        assert list(data_extents(fd, 0, 1 << 20)) == [(40960, 45056)]
        assert list(data_extents(fd, 41000, 42000)) == [(41000, 42000)]
    finally:
        os.close(fd)
    assert list(merge_intervals(iter([(0, 5), (10, 20)]), iter([(3, 7), (20, 25), (30, 31)]))) == \
        [(0, 7), (10, 25), (30, 31)]
