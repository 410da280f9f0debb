"""`ubdsim show` of a COW file over a 1 TiB sparse backing file: only extents are read.

The bitmap of 2^31 sectors is 256 MiB, almost all of it a hole; the terminal map and the
picture must come from the bitmap's data extents and SEEK_DATA answers alone, and a single
written sector must still show (one cell, one pixel column)."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from tests.ops.test_map import cow_write, mkcow, read_chars, sparse_backing
from tests.show.guest import cells_expected, show
from ubdsim.show import describe, figure
from ubdsim.show.terminal import render

TIB = 1 << 40
SECTORS = TIB // 512
MARKS = [(0, 1), (SECTORS // 4, 8), (SECTORS - 1, 1)]      # (first sector, count)


def _build(directory) -> None:
    sparse_backing(str(directory / "big.img"), TIB, [(0, 4096), (TIB // 2, 1 << 20)])
    mkcow(str(directory / "c.cow"), str(directory / "big.img"))
    cow_write(str(directory / "c.cow"), [(first * 512, count * 512) for first, count in MARKS])


def test_one_tib_terminal_map_reads_only_extents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _build(tmp_path)
    before = read_chars()
    layout = describe("c.cow")
    text = render(layout, 80)
    read = read_chars() - before
    assert read < 64 << 10, f"{read} bytes read to show a 1 TiB device"
    lines = text.splitlines()
    assert lines[2] == "  " + cells_expected(SECTORS, 80, MARKS)
    assert lines[2].count("█") == 3
    assert layout.sectors_from("cow") == sum(count for _, count in MARKS)
    # the installed command agrees
    done = show("--width", "80", "c.cow", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2] == lines[2]


def test_one_tib_picture_shows_single_sectors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _build(tmp_path)
    width = 800
    done = show("c.cow", "--png", "big.png", "--width", str(width), cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    image = imread(tmp_path / "big.png")
    fig = figure.draw(describe("c.cow"), width)
    height = round(fig.get_figheight() * fig.dpi)
    ax = next(a for a in fig.axes if a.get_label() == "sector-map")
    row = height - int(round(ax.transData.transform((0, 0.5))[1]))
    rgb = np.array(to_rgb(figure.SOURCE_COLOURS["cow"]))
    cow = set(np.nonzero(np.all(np.abs(image[row, :, :3] - rgb) < 1.5 / 255, axis=1))[0].tolist())
    wanted = []
    for first, count in MARKS:
        x = ax.transData.transform((first, 0.5))[0]
        x1 = ax.transData.transform((first + count, 0.5))[0]
        wanted.append(set(range(math.floor(x) - 1, math.ceil(x1) + 1)))
    assert all(cow & columns for columns in wanted), (sorted(cow), wanted)
    assert cow <= set().union(*wanted)
