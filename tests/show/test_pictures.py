"""`ubdsim show --png/--svg`: the pictures, checked by their pixels and their SVG elements.

The PNG is made by the installed command; its sector-map strip is located with the
figure's own axis transform (the same figure drawn in-process: the Axes labelled
"sector-map", whose data coordinates are sectors), and the COW colour must fill the columns
of the sectors the guest wrote, and no other column of the strip."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from tests.show.guest import GROWN_BYTES, SECTORS, SS, WRITES, show
from ubdsim.show import compare, describe, figure

WIDTH = 1000


def _strip(fig, label: str, height: int):
    """(row in the image, sector -> pixel column function) of the strip labelled `label`."""
    ax = next(a for a in fig.axes if a.get_label() == label)
    _, y = ax.transData.transform((0, 0.5))

    def column(sector: float) -> float:
        return float(ax.transData.transform((sector, 0.5))[0])
    return height - int(round(y)), column


def _colour_columns(image: np.ndarray, row: int, colour: str) -> set[int]:
    rgb = np.array(to_rgb(colour))
    match = np.all(np.abs(image[row, :, :3] - rgb) < 1.5 / 255, axis=1)
    return set(np.nonzero(match)[0].tolist())


def _expected_columns(column, runs) -> tuple[set[int], set[int]]:
    """(columns that must be COW: inside every run, edges excepted; columns that may be)."""
    must, may = set(), set()
    for first, count in runs:
        x0, x1 = column(first), column(first + count)
        lo, hi = math.floor(x0), max(math.ceil(x1), math.floor(x0) + 1)
        must |= set(range(lo + 1, hi - 1))
        may |= set(range(lo - 1, hi + 1))
    return must, may


def test_png_sector_map_has_the_cow_colour_exactly_where_the_guest_wrote(unit):
    done = show("c.cow", "--png", "c.png", "--width", str(WIDTH), cwd=unit)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stderr
    image = imread(unit / "c.png")
    fig = figure.draw(describe(str(unit / "c.cow")), WIDTH)
    height = round(fig.get_figheight() * fig.dpi)
    assert image.shape[:2] == (height, WIDTH)
    row, column = _strip(fig, "sector-map", height)
    cow = _colour_columns(image, row, figure.SOURCE_COLOURS["cow"])
    must, may = _expected_columns(column, WRITES)
    assert must <= cow, sorted(must - cow)
    assert cow <= may, sorted(cow - may)
    # the one-sector write (sector 15000) gets a column of its own: it must show
    single = _expected_columns(column, [WRITES[-1]])[1]
    assert cow & single
    # everything else in the strip (its frame's 2 columns at each end aside) is the backing
    # file's colour
    backing = _colour_columns(image, row, figure.SOURCE_COLOURS["backing"])
    strip = set(range(math.ceil(column(0)) + 2, math.floor(column(SECTORS)) - 2))
    assert strip - may <= backing
    assert not backing & cow


def test_png_of_a_compare_shows_the_tail_only_after_the_resize(resized):
    done = show("--compare", "before.cow", "g.cow", "--png", "cmp.png", "--width", str(WIDTH),
                cwd=resized)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    image = imread(resized / "cmp.png")
    fig = figure.draw_comparison(compare(str(resized / "before.cow"), str(resized / "g.cow")), WIDTH)
    height = round(fig.get_figheight() * fig.dpi)
    assert image.shape[:2] == (height, WIDTH)
    total = GROWN_BYTES // SS
    tail = figure.SOURCE_COLOURS["tail"]
    before_row, before_col = _strip(fig, "sector-map-before", height)
    after_row, after_col = _strip(fig, "sector-map-after", height)
    assert before_col(total) == after_col(total)         # one scale for both
    grown = set(range(math.ceil(after_col(SECTORS)) + 1, math.floor(after_col(total)) - 1))
    assert grown <= _colour_columns(image, after_row, tail)
    assert not _colour_columns(image, before_row, tail)
    # before: nothing drawn past its 8 MiB (the figure's white shows through)
    assert grown <= _colour_columns(image, before_row, "#ffffff")
    for row, col in ((before_row, before_col), (after_row, after_col)):
        cow = _colour_columns(image, row, figure.SOURCE_COLOURS["cow"])
        must, may = _expected_columns(col, WRITES)
        assert must <= cow <= may


def test_svg_is_well_formed_with_one_rectangle_per_written_run(unit):
    done = show("c.cow", "--svg", "c.svg", cwd=unit)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    root = ET.parse(unit / "c.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    ids = [element.get("id") for element in root.iter() if element.get("id")]
    cow = [i for i in ids if i.startswith("sector-cow-")]
    assert len(cow) == len(WRITES)
    assert len([i for i in ids if i.startswith("sector-backing-")]) == len(WRITES) + 1
    assert not [i for i in ids if i.startswith("sector-tail-")]
    colour = figure.SOURCE_COLOURS["cow"].lower()
    for element in root.iter():
        if element.get("id") in cow:
            styles = [child.get("style", "") for child in element.iter()]
            assert any(f"fill: {colour}" in style for style in styles), styles


def test_svg_of_a_grown_file_has_its_tail(resized):
    done = show("g.cow", "--svg", "g.svg", cwd=resized)
    assert done.returncode == 0, done.stderr
    root = ET.parse(resized / "g.svg").getroot()
    ids = [element.get("id") or "" for element in root.iter()]
    assert len([i for i in ids if i.startswith("sector-tail-")]) == 1
    assert len([i for i in ids if i.startswith("sector-cow-")]) == len(WRITES)


def test_pictures_are_reproducible(unit):
    # The picture states st_blocks; ext4 counts an extent-tree block only once writeback has
    # allocated it, so let writeback finish first: same files, same bytes.
    os.sync()
    for name in ("a.png", "b.png", "a.svg", "b.svg"):
        option = "--png" if name.endswith("png") else "--svg"
        assert show("c.cow", option, name, cwd=unit).returncode == 0
    assert (unit / "a.png").read_bytes() == (unit / "b.png").read_bytes()
    assert (unit / "a.svg").read_bytes() == (unit / "b.svg").read_bytes()
