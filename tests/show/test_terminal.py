"""`ubdsim show` without a picture option: the Unicode maps, character for character.

The files are written by a guest (`ubdsim run ... dd oflag=direct`); every expected line is
computed here from the sectors the guest wrote, the spec's geometry (tests/cow/builders) and
the file's SEEK_DATA extents, with the cell rule the help text states."""
from __future__ import annotations

import re

import pytest

from tests.cow.builders import extent_map, spec_geometry
from tests.show.guest import (BACKING_BYTES, GROWN_BYTES, SECTORS, SS, WRITES, cells_expected,
                              file_cells_expected, show)


def _file_parts(path, version: int, size: int) -> tuple[dict, int]:
    header, bitmap_offset, bitmap_len, data_offset = spec_geometry(version, size)
    length = data_offset + size
    allocated = [(max(a, data_offset), b) for a, b in extent_map(str(path)) if b > data_offset]
    padding = [(header, bitmap_offset), (bitmap_offset + bitmap_len, data_offset)]
    return {"H": [(0, header)], "B": [(bitmap_offset, bitmap_offset + bitmap_len)],
            "█": allocated, ":": [p for p in padding if p[1] > p[0]]}, length


@pytest.mark.parametrize("width", [64, 60, 200, 16384, 20000])
def test_sector_map_line_shows_exactly_the_written_sectors(unit, width):
    done = show("--width", str(width), "c.cow", cwd=unit)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    n = min(width, SECTORS)
    assert lines[2] == "  " + cells_expected(SECTORS, n, WRITES)
    assert lines[3] == "  █ COW data   ░ backing file"
    written = sum(count for _, count in WRITES)
    assert lines[5] == f"  sectors read from: COW data {written}, backing file {SECTORS - written}"
    if width == 64:
        assert lines[1].endswith("1 cell = 256 sectors:")
        # the one-sector write at 15000 has a cell of its own
        assert lines[2] == "  " + "░" * 8 + "█" + "░" * 31 + "█" + "░" * 17 + "█" + "░" * 5


def test_file_line_and_zoom_line_follow_the_geometry_and_the_extents(unit):
    parts, length = _file_parts(unit / "c.cow", 3, BACKING_BYTES)
    width = 64
    lines = show("--width", str(width), "c.cow", cwd=unit).stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("file: "))
    assert lines[at].startswith(f"file: {length} bytes apparent, ")
    assert lines[at + 1] == "  " + file_cells_expected(width, 0, length, parts)
    zoom = re.match(r"start of the file, bytes 0-(\d+), ", lines[at + 2])
    assert zoom, lines[at + 2]
    end = int(zoom.group(1)) + 1
    assert end > spec_geometry(3, BACKING_BYTES)[3]          # the data area's start is in it
    assert lines[at + 3] == "  " + file_cells_expected(width, 0, end, parts)
    assert "H header  B bitmap  : padding  █ allocated (on disk)" in lines[at + 4]
    assert lines[at + 5] == ("  header 4128 B at 0, bitmap 2048 B at 8192, data area at 12288 "
                             "(sector s at 12288 + s * 512)")
    assert lines[-1].startswith("layers (top first): c.cow (COW V3, 8.0 MiB, ")
    assert f"-> {unit / 'b.img'} (raw, 8.0 MiB, " in lines[-1]


def test_a_grown_file_shows_its_resize_tail(resized):
    width = 64
    done = show("--width", str(width), "g.cow", cwd=resized)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "[grown by the 2.4 resize patch]" in lines[0]
    total = GROWN_BYTES // SS
    assert lines[2] == "  " + cells_expected(total, width, WRITES, tail_from=SECTORS)
    assert lines[2].endswith("░" + "▓" * 32)


def test_compare_before_and_after_a_resize(resized):
    cells = 64
    done = show("--compare", "--width", str(cells + len("before") + 2), "before.cow", "g.cow",
                cwd=resized)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    total = GROWN_BYTES // SS
    assert lines[3] == "sector maps on one scale, sector 0 at the left, 1 cell = 512 sectors:"
    assert lines[4] == "  before  " + cells_expected(total, cells, WRITES, end=SECTORS)
    assert lines[5] == "  after   " + cells_expected(total, cells, WRITES, tail_from=SECTORS)
    assert len(lines[4]) == len("  before  ") + cells // 2       # 8 MiB of a 16 MiB scale
    _, bitmap_offset, old_len, old_data = spec_geometry(2, BACKING_BYTES)
    _, _, new_len, new_data = spec_geometry(2, GROWN_BYTES)
    changed = lines[lines.index("what changed:") + 1:]
    written = sum(count for _, count in WRITES)
    assert changed == [
        f"  device        {BACKING_BYTES} B -> {GROWN_BYTES} B, {SECTORS} sectors -> {total} sectors",
        f"  bitmap        {old_len} B -> {new_len} B, at {bitmap_offset} (same)",
        f"  data area     at {old_data} -> {new_data}: {new_data - old_data} bytes further into the file",
        changed[3],
        f"  COW data      {written} sectors (same)",
        f"  resize tail   0 sectors -> {total - SECTORS} sectors",
        f"  backing file  {SECTORS - written} sectors (same)"]
    assert changed[3].startswith(f"  file          {old_data + BACKING_BYTES} B -> "
                                 f"{new_data + GROWN_BYTES} B apparent, ")


def test_default_width_is_the_terminals(unit):
    import os
    env = {**os.environ, "COLUMNS": "42"}
    from tests.cow.builders import UBDSIM, run
    done = run([UBDSIM, "show", "c.cow"], cwd=unit, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2] == "  " + cells_expected(SECTORS, 40, WRITES)


def test_a_raw_image_is_one_layer(unit):
    done = show("--width", "32", "b.img", cwd=unit)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "b.img: a raw image (no COW header), 8.0 MiB"
    assert lines[2] == "  " + "▒" * 32
    assert lines[-1] == "layers (top first): b.img (raw, 8.0 MiB, 320.0 KiB allocated)"


def test_a_chain_of_three_layers_and_an_empty_device(tmp_path):
    from tests.ops.test_map import mkcow
    with open(tmp_path / "base.img", "wb") as f:
        f.truncate(1 << 20)
    mkcow(str(tmp_path / "mid.cow"), str(tmp_path / "base.img"))
    mkcow(str(tmp_path / "top.cow"), str(tmp_path / "mid.cow"))
    done = show("--width", "40", "top.cow", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    layers = done.stdout.splitlines()[-1]
    assert layers.startswith("layers (top first): top.cow (COW V3, ")
    assert layers.count(" -> ") == 2 and f"-> {tmp_path / 'mid.cow'} (COW V3, " in layers
    assert layers.endswith(f"-> {tmp_path / 'base.img'} (raw, 1.0 MiB, 0 B allocated)")
    # the kernel reads a backing COW file raw: the device is mid.cow's whole length
    mid = (tmp_path / "mid.cow").stat().st_size
    assert f"sector map: {mid // SS} sectors of 512 B" in done.stdout
    (tmp_path / "empty.img").write_bytes(b"")
    mkcow(str(tmp_path / "e.cow"), str(tmp_path / "empty.img"))
    for args in (["e.cow"], ["e.cow", "--png", "e.png"], ["empty.img"], ["empty.img", "--svg", "e.svg"]):
        done = show(*args, cwd=tmp_path)
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
    assert "  (no sectors: the device is empty)" in show("e.cow", cwd=tmp_path).stdout
