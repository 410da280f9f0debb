"""The compact Unicode map `ubdsim show` prints when no picture file is asked for.

One line per view, one character per cell (cells.py: a cell shows the first of its keys in
priority order, so a one-sector write shows in any size of disk):

  sector map  █ COW data   ▓ [resize] tail (marked, never written)   ▒ raw image   ░ backing file
  file        H header   B bitmap   █ allocated data   : padding   + past the end   · hole

The file line is to scale; the "start of the file" line zooms on header and bitmap when
they are too small to see (CowLayout.zoom). Exact numbers are on the lines around the maps.
"""
from __future__ import annotations

from .cells import cells
from .model import (BACKING, BITMAP, COW, DATA_AREA, DISK, HEADER, PADDING, PAST_END, RAW,
                    SOURCE_ORDER, TAIL, Comparison, CowLayout)
from .units import human

SOURCE_CHARS = {COW: "█", TAIL: "▓", RAW: "▒", BACKING: "░"}
SOURCE_WORDS = {COW: "COW data", TAIL: "resize tail (marked, never written: reads zeros)",
                RAW: "raw image", BACKING: "backing file"}

ALLOCATED, HOLE = "allocated", "hole"
FILE_CHARS = {HEADER: "H", BITMAP: "B", ALLOCATED: "█", PADDING: ":", PAST_END: "+", HOLE: "·"}
FILE_ORDER = (HEADER, BITMAP, ALLOCATED, PADDING, PAST_END, HOLE)
FILE_WORDS = {HEADER: "header", BITMAP: "bitmap", PADDING: "padding",
              ALLOCATED: "allocated (on disk)", HOLE: "hole (no disk blocks)",
              PAST_END: "past the full length"}

INDENT = "  "
MIN_CELLS = 8


def sector_runs(layout: CowLayout) -> list[tuple[str, int, int]]:
    """The device's spans in sectors (a partial last sector counts as one)."""
    ss = layout.sectorsize
    return [(span.source, span.start // ss, -(-span.end // ss)) for span in layout.spans]


def sector_line(layout: CowLayout, n: int, total: int | None = None) -> str:
    """n cells over `total` sectors (default: this device's); past the device: nothing."""
    total = layout.sectors if total is None else total
    if layout.sectors == 0:
        return "(no sectors: the device is empty)"
    shown = cells(sector_runs(layout), total, n, SOURCE_ORDER)
    return "".join(SOURCE_CHARS[key] if key else " " for key in shown).rstrip()


def file_runs(layout: CowLayout) -> list[tuple[str, int, int]]:
    """The file's bytes as FILE_ORDER keys: parts, with the data area's allocation."""
    runs: list[tuple[str, int, int]] = []
    for part in layout.parts:
        if part.name in (DATA_AREA, DISK):
            runs.append((HOLE, part.start, part.end))
            runs += [(ALLOCATED, max(lo, part.start), min(hi, part.end))
                     for lo, hi in layout.allocated if lo < part.end and hi > part.start]
        else:
            runs.append((part.name, part.start, part.end))
    return runs


def file_line(layout: CowLayout, n: int, total: int, start: int = 0) -> str:
    """n cells over file bytes [start, start+total)."""
    if layout.file_length == 0:
        return "(an empty file)"
    shifted = [(key, lo - start, hi - start) for key, lo, hi in file_runs(layout)]
    return "".join(FILE_CHARS[key] if key else " " for key in cells(shifted, total, n, FILE_ORDER)).rstrip()


def _cells_for(total: int, width: int) -> int:
    return max(1, min(width, total))


def _legend(sources: set[str]) -> str:
    return "   ".join(f"{SOURCE_CHARS[s]} {SOURCE_WORDS[s]}" for s in SOURCE_ORDER if s in sources)


def _file_legend(*lines: str) -> str:
    """The file characters that appear in `lines`, explained."""
    used = set("".join(lines))
    return "  ".join(f"{FILE_CHARS[key]} {FILE_WORDS[key]}" for key in
                     (HEADER, BITMAP, PADDING, ALLOCATED, HOLE, PAST_END) if FILE_CHARS[key] in used)


def _cell_rule(sources: set[str]) -> str:
    if COW not in sources:
        return ""
    rule = "a cell shows █ when any of its sectors is COW data"
    return f"{INDENT}({rule}, else ▓ when any is tail)" if TAIL in sources else f"{INDENT}({rule})"


def _counts(layout: CowLayout) -> str:
    present = [s for s in SOURCE_ORDER if layout.bytes_from(s)]
    return ", ".join(f"{SOURCE_WORDS[s].split(' (')[0]} {layout.sectors_from(s)}" for s in present)


def _title(layout: CowLayout) -> str:
    if layout.kind == "raw":
        return f"{layout.path}: a raw image (no COW header), {human(layout.device_size)}"
    return (f"{layout.path}: COW file version {layout.version} ({layout.header_layout} layout) "
            f"over {layout.backing}" + (" [grown by the 2.4 resize patch]" if layout.grown else ""))


def _per_cell(total: int, n: int, unit: str) -> str:
    """"1 cell = 256 sectors", "1 cell = 131264 bytes (128.2 KiB)", "1 cell = about 163.8 sectors"."""
    if total == 0:
        return "nothing to draw"
    if total % n == 0:
        per = total // n
        text = f"{per} {unit}"
    else:
        per = total / n
        text = f"about {per:.1f} {unit}"
    if unit == "bytes" and per >= 1024:
        text += f" ({human(round(per))})"
    return f"1 cell = {text}"


def _metadata_lines(layout: CowLayout) -> list[str]:
    g = layout.geometry
    if g is None:
        return []
    header = layout.part(HEADER)
    return [f"{INDENT}header {header.length} B at 0, bitmap {g.bitmap_len} B at {g.bitmap_offset}, "
            f"data area at {g.data_offset} (sector s at {g.data_offset} + s * {g.sectorsize})"]


def _layers_line(layout: CowLayout) -> list[str]:
    names = []
    for layer in layout.layers:
        if layer.problem:
            names.append(f"{layer.path} ({layer.problem})")
        else:
            names.append(f"{layer.path} ({layer.kind}, {human(layer.size or 0)}, "
                         f"{human(layer.allocated or 0)} allocated)")
    lines = ["layers (top first): " + " -> ".join(names)]
    if layout.chain_problem:
        lines.append(f"{INDENT}chain: {layout.chain_problem}")
    return lines


def render(layout: CowLayout, width: int) -> str:
    """The terminal picture of one unit, `width` cells per map line at most."""
    n = _cells_for(layout.sectors, width)
    sources = {s.source for s in layout.spans}
    lines = [_title(layout),
             f"sector map: {layout.sectors} sectors of {layout.sectorsize} B "
             f"({human(layout.device_size)}), sector 0 at the left, "
             f"{_per_cell(layout.sectors, n, 'sectors')}:",
             INDENT + sector_line(layout, n)]
    if sources:
        lines += [INDENT + _legend(sources)]
        lines += [rule] if (rule := _cell_rule(sources)) else []
        lines += [f"{INDENT}sectors read from: {_counts(layout)}"]
    nf = _cells_for(layout.file_length, width)
    maps = [file_line(layout, nf, layout.file_length)]
    lines += [f"file: {layout.file_length} bytes apparent, {layout.allocated_bytes} allocated "
              f"({human(layout.file_length)} vs {human(layout.allocated_bytes)}), "
              f"{_per_cell(layout.file_length, nf, 'bytes')}:",
              INDENT + maps[-1]]
    zoom = layout.zoom
    if zoom is not None:
        nz = _cells_for(zoom[1] - zoom[0], width)
        maps.append(file_line(layout, nz, zoom[1] - zoom[0], zoom[0]))
        lines += [f"start of the file, bytes {zoom[0]}-{zoom[1] - 1}, "
                  f"{_per_cell(zoom[1] - zoom[0], nz, 'bytes')}:",
                  INDENT + maps[-1]]
    legend = _file_legend(*maps)
    lines += [INDENT + legend] if legend else []
    lines += [*_metadata_lines(layout), *_layers_line(layout)]
    return "\n".join(lines)


def render_comparison(comparison: Comparison, width: int) -> str:
    """Before and after, each map pair on one scale, then what changed."""
    before, after = comparison.before, comparison.after
    label = max(len("before"), len("after"))

    def row(name: str, text: str) -> str:
        return f"{INDENT}{name:<{label}}  {text}"

    width = max(MIN_CELLS, width - label - 2)
    sectors = max(before.sectors, after.sectors)
    n = _cells_for(sectors, width)
    lines = [f"before: {_title(before)}", f"after:  {_title(after)}", "",
             f"sector maps on one scale, sector 0 at the left, "
             f"{_per_cell(sectors, n, 'sectors')}:",
             row("before", sector_line(before, n, sectors)),
             row("after", sector_line(after, n, sectors)),
             INDENT + _legend({s.source for s in before.spans + after.spans})]
    length = max(before.file_length, after.file_length)
    nf = _cells_for(length, width)
    maps = [file_line(before, nf, length), file_line(after, nf, length)]
    lines += [f"files on one scale, {_per_cell(length, nf, 'bytes')}:",
              row("before", maps[0]), row("after", maps[1])]
    zooms = [z for z in (before.zoom, after.zoom) if z is not None]
    if zooms:
        end = max(z[1] for z in zooms)
        nz = _cells_for(end, width)
        maps += [file_line(before, nz, end), file_line(after, nz, end)]
        lines += [f"start of the files, bytes 0-{end - 1}, {_per_cell(end, nz, 'bytes')}:",
                  row("before", maps[2]), row("after", maps[3])]
    lines += [INDENT + _file_legend(*maps), "", "what changed:", *changes(comparison)]
    return "\n".join(lines)


def changes(comparison: Comparison) -> list[str]:
    """The differences, one line each, numbers exact."""
    def pair(what: str, unit: str = "") -> str:
        a, b = comparison.change(what)
        return f"{a}{unit} -> {b}{unit}" if a != b else f"{a}{unit} (same)"

    lines = [f"{INDENT}device        {pair('device', ' B')}, {pair('sectors', ' sectors')}"]
    if comparison.before.geometry is not None and comparison.after.geometry is not None:
        lines += [f"{INDENT}bitmap        {pair('bitmap_len', ' B')}, at {pair('bitmap_offset')}",
                  f"{INDENT}data area     at {pair('data_offset')}"]
        moved = comparison.data_moved
        if moved:
            lines[-1] += f": {abs(moved)} bytes {'further into' if moved > 0 else 'back in'} the file"
    lines += [f"{INDENT}file          {pair('file_length', ' B')} apparent, "
              f"{pair('allocated', ' B')} allocated"]
    for source in SOURCE_ORDER:
        a, b = comparison.change(source)
        if a or b:
            lines.append(f"{INDENT}{SOURCE_WORDS[source].split(' (')[0]:<13} {pair(source, ' sectors')}")
    return lines


__all__ = ["FILE_CHARS", "SOURCE_CHARS", "changes", "file_line", "render", "render_comparison",
           "sector_line"]
