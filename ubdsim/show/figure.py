"""The picture `ubdsim show --png/--svg` draws, with matplotlib, from the layout model.

Panels, top to bottom, each a strip with fixed pixel geometry (a figure `width` pixels wide
at DPI dots per inch; every strip spans the same columns [LEFT, width - RIGHT)):

1. the COW file to scale: its parts (header, padding, bitmap, data area) over its bytes, and
   below them what the host file system allocated (SEEK_DATA: the data area is mostly holes);
2. a zoom on the header and bitmap when they are too small to see next to the data area
   (CowLayout.zoom), with lines from the zoomed window down to it;
3. the sector map: where a guest's read of each sector goes (COW data, backing file, the
   [resize] tail, a raw image), from the device view's runs;
4. the chain's layers, top first: what each file holds, at device offsets.

Runs are quantised onto the strip's pixel columns (cells.py), so a one-sector write in a
1 TiB disk still gets one column and a fragmented file costs at most one rectangle per
column. Each sector-map rectangle carries an SVG id, `sector-SOURCE-K` (`before-`/`after-`
prefixed in a comparison), and is drawn without antialiasing in its source's exact colour.
The Axes of the sector map is labelled "sector-map" (comparison: "sector-map-before",
"sector-map-after"), so its data-to-pixel transform can be asked for.
"""
from __future__ import annotations

import os

import matplotlib
# Figure objects, not pyplot: no GUI backend, no global figure state; savefig() picks the
# Agg (PNG) or SVG canvas by format.
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch, Patch, Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter

from .cells import boundary, cells, groups
from .model import (BACKING, BITMAP, COW, DATA_AREA, DISK, HEADER, PADDING, PAST_END, RAW,
                    SOURCE_ORDER, TAIL, Comparison, CowLayout)
from .terminal import changes
from .units import PICTURE_MIN_WIDTH, PICTURE_WIDTH, human

DPI = 100
LEFT, RIGHT = 180, 40        # pixels left of and right of every strip
TOP = 78                     # the title block
GAP = 62                     # above each strip: its title and legend
BELOW = 44                   # under each strip: tick labels
BOTTOM = 16
MIN_WIDTH = PICTURE_MIN_WIDTH
DEFAULT_WIDTH = PICTURE_WIDTH

SOURCE_COLOURS = {COW: "#D55E00", TAIL: "#F0E442", RAW: "#999999", BACKING: "#9CC3E6"}
SOURCE_WORDS = {COW: "COW data (written by a guest)", TAIL: "resize tail (marked, never written)",
                RAW: "raw image", BACKING: "backing file"}
PART_COLOURS = {HEADER: "#0072B2", PADDING: "#CFCFCF", BITMAP: "#009E73", DATA_AREA: "#F2F2F2",
                DISK: "#F2F2F2", PAST_END: "#CC79A7"}
PART_ORDER = (HEADER, BITMAP, PAST_END, PADDING, DATA_AREA, DISK)
ALLOCATED, HOLE = "allocated", "hole"
DISK_COLOURS = {ALLOCATED: "#404040", HOLE: "#FFFFFF"}
LAYER_COLOURS = {"marked": "#D55E00", "unmarked": "#F7E4D7", "data": "#3A7FB8",
                 "hole": "#E6EEF5"}
LAYER_WORDS = {"marked": "marked in its bitmap", "unmarked": "not marked (read from below)",
               "data": "allocated data", "hole": "hole (reads zeros)"}
TEXT = "#222222"


def _columns(width: int) -> int:
    return width - LEFT - RIGHT


class _Sheet:
    """A figure laid out strip by strip from the top, in pixels."""

    def __init__(self, width: int, strips: list[int]) -> None:
        if width < MIN_WIDTH:
            raise ValueError(f"a picture needs at least {MIN_WIDTH} pixels of width")
        self.width = width
        self.height = TOP + sum(GAP + h + BELOW for h in strips) + BOTTOM
        self.figure = Figure(figsize=(width / DPI, self.height / DPI), dpi=DPI)
        self.figure.patch.set_facecolor("white")
        self.y = TOP

    def strip(self, height: int, label: str):
        """The next strip's Axes: `height` pixels tall, columns [LEFT, width - RIGHT)."""
        self.y += GAP
        bottom = self.height - self.y - height
        ax = self.figure.add_axes((LEFT / self.width, bottom / self.height,
                                   _columns(self.width) / self.width, height / self.height),
                                  label=label)
        self.y += height + BELOW
        ax.tick_params(labelsize=8, colors=TEXT)
        for spine in ax.spines.values():
            spine.set_color("#888888")
        return ax

    def title(self, first: str, second: str) -> None:
        self.figure.text(12 / self.width, 1 - 14 / self.height, first, fontsize=13,
                         fontweight="bold", va="top", color=TEXT)
        self.figure.text(12 / self.width, 1 - 40 / self.height, second, fontsize=9.5, va="top",
                         color=TEXT, wrap=True)


def _heading(ax, text: str, handles: list[Patch]) -> None:
    ax.set_title(text, loc="left", fontsize=10.5, color=TEXT, pad=24)
    if handles:
        ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0),
                  ncol=len(handles), frameon=False, fontsize=8.5, borderaxespad=0.2,
                  handlelength=1.4, columnspacing=1.2)


def _bars(ax, shown, total: int, n: int, lo: float, hi: float, colours: dict[str, str],
          start: int = 0, gid: str | None = None) -> dict[str, int]:
    """One rectangle per group of equal cells, in data units; returns rectangles per key."""
    count: dict[str, int] = {}
    for key, first, past in groups(shown):
        x0, x1 = start + boundary(first, total, n), start + boundary(past, total, n)
        # above the Axes frame (zorder 2.5): a run in the first or last column must show
        rect = Rectangle((x0, lo), x1 - x0, hi - lo, facecolor=colours[key], edgecolor="none",
                         linewidth=0, antialiased=False, zorder=3)
        k = count.get(key, 0)
        count[key] = k + 1
        if gid is not None:
            rect.set_gid(f"{gid}-{key}-{k}")
        ax.add_patch(rect)
    return count


def _file_strip(ax, layout: CowLayout, lo: int, hi: int, n: int) -> None:
    """Parts on top, allocation below, over file bytes [lo, hi)."""
    total = hi - lo
    parts = [(p.name, p.start - lo, p.end - lo) for p in layout.parts]
    _bars(ax, cells(parts, total, n, PART_ORDER), total, n, 1.08, 1.92, PART_COLOURS, lo)
    disk = [(HOLE, 0, layout.file_length - lo)]
    disk += [(ALLOCATED, a - lo, b - lo) for a, b in layout.allocated]
    _bars(ax, cells(disk, total, n, (ALLOCATED, HOLE)), total, n, 0.08, 0.92, DISK_COLOURS, lo)
    ax.set_xlim(lo, max(hi, lo + 1))        # an empty file: an empty strip
    ax.set_ylim(0, 2)
    ax.set_yticks([1.5, 0.5], ["parts", "on disk"], fontsize=8.5)
    ax.tick_params(axis="y", length=0)


def binary_ticks(lo: int, hi: int, most: int = 9) -> list[int]:
    """Ticks at multiples of the smallest power of two that gives at most `most` of them."""
    step = 1
    while (hi - lo) // step + 1 > most:
        step *= 2
    first = -(-lo // step) * step
    return list(range(first, hi + 1, step))


def _byte_axis(ax, lo: int, hi: int) -> None:
    ax.xaxis.set_major_locator(FixedLocator(binary_ticks(lo, hi)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: human(int(x))))


def _zoom_axis(ax, layout: CowLayout, lo: int, hi: int) -> None:
    """Ticks at every part boundary inside the zoom (exact byte offsets), crowded ones left out."""
    px = _columns(int(ax.figure.get_figwidth() * DPI))
    marks: list[int] = []
    for at in sorted({lo, hi, *(p.start for p in layout.parts if lo <= p.start <= hi)}):
        if not marks or (at - marks[-1]) * px / (hi - lo) >= 46:
            marks.append(at)
    ax.xaxis.set_major_locator(FixedLocator(marks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(x)}"))
    ax.set_xlabel("byte offset in the file", fontsize=8, color=TEXT, labelpad=2)
    for part in layout.parts:
        a, b = max(part.start, lo), min(part.end, hi)
        if (b - a) * px / (hi - lo) >= 110 and part.name not in (DATA_AREA, DISK):
            colour = "white" if part.name in (HEADER, BITMAP) else TEXT
            ax.text((a + b) / 2, 1.5, f"{part.name} {part.length} B", ha="center", va="center",
                    fontsize=8.5, color=colour, zorder=5)
        elif part.name == DATA_AREA and (b - a) * px / (hi - lo) >= 110:
            ax.text(a + (b - a) * 0.02, 1.5, f"data area from {part.start} →", ha="left",
                    va="center", fontsize=8.5, color=TEXT, zorder=5)


def _sector_strip(ax, layout: CowLayout, total: int, n: int, gid: str) -> dict[str, int]:
    ss = layout.sectorsize
    runs = [(s.source, s.start // ss, -(-s.end // ss)) for s in layout.spans]
    count = _bars(ax, cells(runs, total, n, SOURCE_ORDER), total, n, 0, 1, SOURCE_COLOURS,
                  gid=gid)
    ax.set_xlim(0, max(total, 1))
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.xaxis.set_major_locator(FixedLocator(binary_ticks(0, total)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{int(x)}\n{human(int(x) * ss)}"))
    return count


def _source_handles(layouts: list[CowLayout]) -> list[Patch]:
    present = {s.source for layout in layouts for s in layout.spans}
    return [Patch(facecolor=SOURCE_COLOURS[s], label=SOURCE_WORDS[s]) for s in SOURCE_ORDER
            if s in present]


def _part_handles(layouts: list[CowLayout]) -> list[Patch]:
    present = {p.name for layout in layouts for p in layout.parts}
    handles = [Patch(facecolor=PART_COLOURS[name], edgecolor="#888888", linewidth=0.5, label=name)
               for name in (HEADER, BITMAP, PADDING, DATA_AREA, DISK, PAST_END) if name in present]
    return handles + [Patch(facecolor=DISK_COLOURS[ALLOCATED], label="allocated"),
                      Patch(facecolor=DISK_COLOURS[HOLE], edgecolor="#888888", linewidth=0.5,
                            label="hole")]


def _funnel(figure, big, small, lo: int, hi: int) -> None:
    """Lines from the zoomed window on the whole-file strip down to the zoom strip."""
    big.add_patch(Rectangle((lo, 0), hi - lo, 2, fill=False, edgecolor=TEXT, linewidth=1,
                            zorder=4))
    for x in (lo, hi):
        figure.add_artist(ConnectionPatch(xyA=(x, 0), coordsA=big.transData, xyB=(x, 2),
                                          coordsB=small.transData, color="#888888",
                                          linewidth=0.8, linestyle="--"))


def _layer_label(layer) -> str:
    name = layer.path if len(layer.path) <= 26 else os.path.basename(layer.path)
    name = name if len(name) <= 26 else name[:12] + "…" + name[-12:]
    return f"{name}\n{layer.kind}"


def _layers_strip(ax, layout: CowLayout, n: int) -> None:
    total = max([layout.device_size] + [layer.size or 0 for layer in layout.layers])
    rows = len(layout.layers)
    for i, layer in enumerate(layout.layers):
        top = rows - i
        if layer.problem is not None or layer.size is None:
            ax.text(total * 0.01, top - 0.5, f"cannot be shown: {layer.problem}", va="center",
                    fontsize=8.5, color="#B00020")
            continue
        hold, rest = ("marked", "unmarked") if layer.is_cow else ("data", "hole")
        runs = [(rest, 0, layer.size)] + [(hold, a, b) for a, b in layer.holds]
        _bars(ax, cells(runs, total, n, (hold, rest)), total, n, top - 0.88, top - 0.12,
              LAYER_COLOURS)
        if total and (total - layer.size) * n / total >= 160:
            ax.text((layer.size + total) / 2, top - 0.5, f"(it ends at {human(layer.size)})",
                    ha="center", va="center", fontsize=8.5, color="#666666", zorder=5)
    if layout.chain_problem:
        ax.text(total * 0.01, 0.5, layout.chain_problem, va="center", fontsize=8.5, color="#B00020")
    ax.set_xlim(0, max(total, 1))
    ax.set_ylim(0, rows + (1 if layout.chain_problem else 0))
    ax.set_yticks([rows - i - 0.5 for i in range(rows)],
                  [_layer_label(layer) for layer in layout.layers], fontsize=8)
    ax.tick_params(axis="y", length=0)
    _byte_axis(ax, 0, total)
    ax.set_xlabel("device offset", fontsize=8, color=TEXT, labelpad=2)


def _layer_handles(layout: CowLayout) -> list[Patch]:
    keys = []
    if any(layer.is_cow for layer in layout.layers):
        keys += ["marked", "unmarked"]
    if any(not layer.is_cow and layer.problem is None for layer in layout.layers):
        keys += ["data", "hole"]
    return [Patch(facecolor=LAYER_COLOURS[k], label=LAYER_WORDS[k]) for k in keys]


def _subtitle(layout: CowLayout) -> str:
    bits = [f"device {human(layout.device_size)} ({layout.sectors} sectors of {layout.sectorsize} B)",
            f"file {human(layout.file_length)} apparent, {human(layout.allocated_bytes)} allocated"]
    for source in SOURCE_ORDER:
        if layout.bytes_from(source):
            bits.append(f"{SOURCE_WORDS[source].split(' (')[0]}: {layout.sectors_from(source)} sectors")
    return " · ".join(bits)


def _headline(layout: CowLayout) -> str:
    if layout.kind == "raw":
        return f"{layout.path}: a raw image (the file is the disk)"
    grown = ", grown by the 2.4 resize patch" if layout.grown else ""
    return (f"{layout.path}: COW file version {layout.version} over "
            f"{layout.backing}{grown}")


def draw(layout: CowLayout, width: int = DEFAULT_WIDTH) -> Figure:
    """The picture of one unit (a Figure; save it with `save`)."""
    layer_h = 30 * max(1, len(layout.layers)) + (30 if layout.chain_problem else 0)
    zoom = layout.zoom
    strips = [56] + ([56] if zoom else []) + [44, layer_h]
    sheet = _Sheet(width, strips)
    n = _columns(width)
    sheet.title(_headline(layout), _subtitle(layout))
    whole = sheet.strip(56, "file")
    _file_strip(whole, layout, 0, layout.file_length, n)
    _byte_axis(whole, 0, layout.file_length)
    _heading(whole, "the file, to scale (byte offsets)", _part_handles([layout]))
    if zoom:
        small = sheet.strip(56, "zoom")
        _file_strip(small, layout, zoom[0], zoom[1], n)
        _zoom_axis(small, layout, *zoom)
        _heading(small, f"zoom: bytes {zoom[0]}–{zoom[1]} (header and bitmap are "
                 f"{100 * layout.metadata_end / max(1, layout.file_length):.2g}% of the file)", [])
        _funnel(sheet.figure, whole, small, *zoom)
    sectors = sheet.strip(44, "sector-map")
    _sector_strip(sectors, layout, layout.sectors, n, "sector")
    _heading(sectors, "sector map: where a guest's read of each sector goes (sector, offset)",
             _source_handles([layout]))
    layers = sheet.strip(layer_h, "layers")
    _layers_strip(layers, layout, n)
    deep = len(layout.layers) > 2
    _heading(layers, "the chain, top first: what each file holds" +
             (" (a kernel reads a COW backing file raw)" if deep else ""),
             _layer_handles(layout))
    return sheet.figure


def draw_comparison(comparison: Comparison, width: int = DEFAULT_WIDTH) -> Figure:
    """Before and after, each pair of strips on one scale, and what changed."""
    pair = [comparison.before, comparison.after]
    zooms = [z for z in (layout.zoom for layout in pair) if z is not None]
    change_lines = changes(comparison)
    text_h = 16 * len(change_lines) + 8
    strips = [56, 56] + ([56, 56] if zooms else []) + [44, 44, text_h]
    sheet = _Sheet(width, strips)
    n = _columns(width)
    sheet.title(f"before and after: {comparison.before.path} → {comparison.after.path}",
                f"before: {_headline(comparison.before)}\nafter: {_headline(comparison.after)}")
    length = max(layout.file_length for layout in pair)
    for name, layout in zip(("before", "after"), pair):
        ax = sheet.strip(56, f"file-{name}")
        _file_strip(ax, layout, 0, length, n)
        _byte_axis(ax, 0, length)
        _heading(ax, f"{name}: {layout.path}, the file to scale ({human(layout.file_length)})",
                 _part_handles(pair) if name == "before" else [])
    if zooms:
        end = max(z[1] for z in zooms)
        for name, layout in zip(("before", "after"), pair):
            ax = sheet.strip(56, f"zoom-{name}")
            _file_strip(ax, layout, 0, end, n)
            _zoom_axis(ax, layout, 0, end)
            g = layout.geometry
            what = (f"bitmap {g.bitmap_len} B at {g.bitmap_offset}, data area at {g.data_offset}"
                    if g is not None else "a raw image")
            _heading(ax, f"{name}, zoom on bytes 0–{end}: {what}", [])
    total = max(layout.sectors for layout in pair)
    for name, layout in zip(("before", "after"), pair):
        ax = sheet.strip(44, f"sector-map-{name}")
        _sector_strip(ax, layout, total, n, f"{name}-sector")
        _heading(ax, f"{name}: sector map ({layout.sectors} sectors)",
                 _source_handles(pair) if name == "before" else [])
    ax = sheet.strip(text_h, "changes")
    ax.axis("off")
    ax.set_title("what changed", loc="left", fontsize=10.5, color=TEXT)
    ax.text(0, 1, "\n".join(line.strip() for line in change_lines), va="top", ha="left",
            fontsize=9, family="monospace", color=TEXT, transform=ax.transAxes, linespacing=1.45)
    return sheet.figure


def save(figure: Figure, fileobj, fmt: str) -> None:
    """Write `figure` as "png" or "svg", reproducibly (no date, a fixed SVG id salt)."""
    metadata = {"Software": None} if fmt == "png" else {"Date": None}
    with matplotlib.rc_context({"svg.hashsalt": "ubdsim-show", "svg.fonttype": "path"}):
        figure.savefig(fileobj, format=fmt, dpi=DPI, metadata=metadata)


__all__ = ["DEFAULT_WIDTH", "DPI", "LEFT", "MIN_WIDTH", "RIGHT", "SOURCE_COLOURS", "draw",
           "draw_comparison", "save"]
