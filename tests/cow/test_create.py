"""`ubdsim mkcow` / create_cow() against uml_mkcow, run during the test.

Byte-for-byte: header, bitmap, file length, data/hole layout and file mode, over awkward
backing sizes. Plus V1/V2 headers checked against the spec's byte tables and read back by
uml_moo, and -f / failure behaviour compared with what uml_mkcow observably does.
"""
from __future__ import annotations

import os
import stat
import struct

import pytest

from tests.cow.builders import UBDSIM, extent_map, pack_spec_header, random_file, run, spec_geometry
from ubdsim.cow.create import create_cow

SIZES = [0, 512, 4608, 5000, 4194304 + 100, 64 << 20]


def _same_file(a, b):
    assert open(a, "rb").read() == open(b, "rb").read()
    assert extent_map(a) == extent_map(b)
    assert stat.S_IMODE(os.stat(a).st_mode) == stat.S_IMODE(os.stat(b).st_mode)


@pytest.mark.parametrize("size", SIZES)
def test_default_v3_is_byte_identical_to_uml_mkcow(tmp, size):
    with open("backing", "wb") as f:
        f.truncate(size)
    assert run(["uml_mkcow", "oracle.cow", "backing"]).returncode == 0
    r = run([UBDSIM, "mkcow", "mine.cow", "backing"])
    assert r.returncode == 0, r.stderr
    _same_file("oracle.cow", "mine.cow")


def test_relative_backing_in_a_symlinked_directory_is_stored_like_uml_mkcow(tmp):
    os.mkdir("real")
    os.symlink("real", "link")
    random_file("real/b", 4608, seed=1)
    assert run(["uml_mkcow", "oracle.cow", "link/b"]).returncode == 0
    create_cow("mine.cow", "link/b")
    _same_file("oracle.cow", "mine.cow")


def test_one_tib_sparse_backing_is_identical_and_costs_three_blocks(tmp):
    with open("backing", "wb") as f:
        f.truncate(1 << 40)
    assert run(["uml_mkcow", "oracle.cow", "backing"]).returncode == 0
    assert run([UBDSIM, "mkcow", "mine.cow", "backing"]).returncode == 0
    with open("oracle.cow", "rb") as a, open("mine.cow", "rb") as b:
        assert a.read(1 << 16) == b.read(1 << 16)
    assert os.path.getsize("mine.cow") == os.path.getsize("oracle.cow")
    assert extent_map("mine.cow") == extent_map("oracle.cow")
    assert os.stat("mine.cow").st_blocks == os.stat("oracle.cow").st_blocks


@pytest.mark.parametrize("version", [1, 2])
def test_old_versions_follow_the_spec_tables_and_uml_moo_reads_them(tmp, version):
    random_file("backing", 6144 + 512, seed=version)
    create_cow("mine.cow", "backing", version=version)
    st = os.stat("backing")
    header_size, _, bitmap_len, data_offset = spec_geometry(version, st.st_size)
    data = open("mine.cow", "rb").read()
    assert data[:header_size] == pack_spec_header(version, os.fsencode(os.path.abspath("backing")),
                                                  int(st.st_mtime), st.st_size)
    assert len(data) == data_offset + st.st_size
    r = run(["uml_moo", "mine.cow", "merged"])
    assert r.returncode == 0, r.stderr
    # Nothing is marked, so every sector that has a bit comes from the backing file. The
    # sectors past bitmap_len * 8 (rounding bug) get their bits from heap bytes past uml_moo's
    # bitmap buffer (observed: sector 9 read as zeros); they are not compared.
    covered = bitmap_len * 8 * 512
    assert bitmap_len * 8 < st.st_size // 512       # this size does hit the rounding bug
    assert open("merged", "rb").read()[:covered] == open("backing", "rb").read()[:covered]
    assert os.path.getsize("merged") == st.st_size // 512 * 512   # partial sector dropped


def test_force_replaces_the_whole_file_while_uml_mkcow_keeps_old_bytes(tmp):
    random_file("backing", 8192, seed=3)
    for name in ("oracle.cow", "mine.cow"):
        assert run(["uml_mkcow", name, "backing"]).returncode == 0
        with open(name, "r+b") as f:          # an old COW file with sector 0 marked
            f.seek(8192)
            f.write(b"\x01")
    assert run(["uml_mkcow", "-f", "oracle.cow", "backing"]).returncode == 0
    assert open("oracle.cow", "rb").read()[8192] == 1      # uml_mkcow -f: stale bit survives
    r = run([UBDSIM, "mkcow", "-f", "mine.cow", "backing"])
    assert r.returncode == 0, r.stderr
    assert run(["uml_mkcow", "fresh.cow", "backing"]).returncode == 0
    _same_file("fresh.cow", "mine.cow")


def test_existing_cow_file_is_refused_and_left_untouched(tmp):
    random_file("backing", 4096, seed=4)
    with open("mine.cow", "wb") as f:
        f.write(b"precious")
    assert run(["uml_mkcow", "mine.cow", "backing"]).returncode != 0   # O_EXCL, like us
    r = run([UBDSIM, "mkcow", "mine.cow", "backing"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "already exists" in r.stderr
    assert open("mine.cow", "rb").read() == b"precious"


def test_missing_backing_leaves_nothing_while_uml_mkcow_leaves_an_empty_file(tmp):
    r = run(["uml_mkcow", "oracle.cow", "nonexistent"])
    assert r.returncode != 0 and os.path.getsize("oracle.cow") == 0
    r = run([UBDSIM, "mkcow", "mine.cow", "nonexistent"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(".")) == ["oracle.cow"]


def test_backing_name_too_long_for_v1_is_refused_cleanly(tmp):
    os.makedirs("d" * 120 + "/" + "e" * 120)
    name = "d" * 120 + "/" + "e" * 120 + "/backing"
    random_file(name, 512, seed=5)
    r = run([UBDSIM, "mkcow", "--cow-version", "1", "mine.cow", name])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert os.listdir(".") == ["d" * 120]


def test_header_written_has_the_kernel_values(tmp):
    random_file("backing", 1536, seed=6)
    header = create_cow("mine.cow", "backing")
    magic, version, mtime, size, ss, align, fmt = struct.unpack_from(">IIIQIII",
                                                                     open("mine.cow", "rb").read())
    assert (magic, version, size, ss, align, fmt) == (0x4F4F4F4D, 3, 1536, 512, 4096, 0)
    assert mtime == int(os.stat("backing").st_mtime) == header.mtime
