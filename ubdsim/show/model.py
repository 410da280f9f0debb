"""The layout model `ubdsim show` draws: what is where in a COW file and in the device.

Three views of one unit, all in byte offsets:

- the *file*: its parts as the header and Geometry place them (header, padding, bitmap,
  padding, data area; a raw image is one part, the disk) and the byte ranges the host file
  system has allocated (SEEK_DATA/SEEK_HOLE: the data area is mostly holes);
- the *device*: the source of every run, from the device view (ops/device_view.py) -- COW
  data, backing file, [resize] the grown tail, or a raw image;
- the *chain*: every layer walk_chain() finds from the top file down (or from `-b BACKING`
  down), with the device ranges each one holds (a COW layer: its marked sectors; a raw one:
  its allocated extents).

Everything comes from bitmap extents, lseeks and headers: a COW file over a 1 TiB sparse
backing file is described without reading a hole. The drawing (terminal.py, figure.py) is
separate and computes nothing about COW files.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from ..cow.image import CowImage
from ..cow.sizes import Geometry
from ..errors import UbdError
from ..fileio import data_extents
from ..ops.chain import Layer, walk_chain
from ..ops.device_view import BACKING, COW, RAW, TAIL, open_device

HEADER, PADDING, BITMAP, DATA_AREA, DISK, PAST_END = (
    "header", "padding", "bitmap", "data area", "disk", "past the end")

ZOOM_WHEN_BELOW = 0.05      # zoom on the metadata when it is less than 5% of the file


@dataclass(frozen=True)
class Part:
    """Bytes [start, end) of the file and what they are (HEADER, PADDING, BITMAP, ...)."""

    name: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Span:
    """Device bytes [start, end) and where a guest's read of them goes (a SOURCES name)."""

    source: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class LayerView:
    """One file of the backing chain and the device byte ranges it holds."""

    path: str
    kind: str                              # "COW V2", "raw", or what the walk found
    is_cow: bool
    size: int | None                       # device bytes it describes (COW: header size)
    apparent: int | None                   # st_size
    allocated: int | None                  # st_blocks * 512
    holds: tuple[tuple[int, int], ...] = ()
    problem: str | None = None             # why it cannot be shown (or why the walk stopped)


@dataclass(frozen=True)
class CowLayout:
    """Everything one picture of a unit shows; byte offsets throughout."""

    path: str
    kind: str                              # "cow" or "raw"
    version: int | None
    header_layout: str | None              # "V1", "V2", "V3", "V3-broken"
    sectorsize: int
    device_size: int
    backing: str | None
    backing_size: int | None
    file_length: int                       # apparent length of the top file
    allocated_bytes: int                   # st_blocks * 512 of the top file
    parts: tuple[Part, ...]
    allocated: tuple[tuple[int, int], ...] # the top file's data extents
    spans: tuple[Span, ...]                # the device, in order, adjacent equal sources merged
    layers: tuple[LayerView, ...]
    chain_problem: str | None = None
    geometry: Geometry | None = field(default=None, repr=False)

    @property
    def sectors(self) -> int:
        return -(-self.device_size // self.sectorsize)

    @property
    def grown(self) -> bool:
        """[resize] the device is larger than its backing file (the 2.4 COW-resize patch)."""
        return self.backing_size is not None and self.device_size > self.backing_size

    def bytes_from(self, source: str) -> int:
        return sum(span.length for span in self.spans if span.source == source)

    def sectors_from(self, source: str) -> int:
        """Sectors a guest reads from `source` (a sector split between two sources counts
        for each: only a final partial sector can be)."""
        ss = self.sectorsize
        return sum(-(-span.end // ss) - span.start // ss for span in self.spans
                   if span.source == source)

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)

    @property
    def metadata_end(self) -> int:
        """Where the data area starts (0 for a raw image)."""
        return self.geometry.data_offset if self.geometry is not None else 0

    @property
    def zoom(self) -> tuple[int, int] | None:
        """The byte range worth a zoomed strip: header, bitmap and the data area's first
        sectors, when they are too small to see next to the whole file (None otherwise)."""
        if self.geometry is None or self.file_length <= 0:
            return None
        end = self.metadata_end
        if end >= ZOOM_WHEN_BELOW * max(self.file_length, self.geometry.file_length):
            return None
        ss = self.sectorsize
        extra = max(end // 3, 8 * ss)
        return 0, min(max(self.file_length, end), -(-(end + extra) // ss) * ss)


@dataclass(frozen=True)
class Comparison:
    """Two layouts side by side (before and after a resize, or any two units)."""

    before: CowLayout
    after: CowLayout

    def change(self, what: str) -> tuple[int | None, int | None]:
        """(before, after) of one quantity: device, bitmap_offset, bitmap_len, data_offset,
        file_length, allocated, or a source name (sectors read from it)."""
        return self._value(self.before, what), self._value(self.after, what)

    @staticmethod
    def _value(layout: CowLayout, what: str) -> int | None:
        g = layout.geometry
        if what == "device":
            return layout.device_size
        if what == "sectors":
            return layout.sectors
        if what in ("bitmap_offset", "bitmap_len", "data_offset"):
            return getattr(g, what) if g is not None else None
        if what == "file_length":
            return layout.file_length
        if what == "allocated":
            return layout.allocated_bytes
        return layout.sectors_from(what)

    @property
    def data_moved(self) -> int | None:
        """How far the data area moved into the file (the resize patch moves it)."""
        a, b = self.change("data_offset")
        return None if a is None or b is None else b - a


# -- building the model ----------------------------------------------------------------------
def _length(fd: int, st: os.stat_result) -> int:
    return st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(fd, 0, os.SEEK_END)


def _cow_parts(header_size: int, g: Geometry, file_length: int) -> tuple[Part, ...]:
    """The file's parts as the header and Geometry place them."""
    bitmap_end = g.bitmap_offset + g.bitmap_len
    parts = [Part(HEADER, 0, header_size)]
    if g.bitmap_offset > header_size:
        parts.append(Part(PADDING, header_size, g.bitmap_offset))
    parts.append(Part(BITMAP, g.bitmap_offset, bitmap_end))
    if g.data_offset > bitmap_end:
        parts.append(Part(PADDING, bitmap_end, g.data_offset))
    parts.append(Part(DATA_AREA, g.data_offset, g.file_length))
    if file_length > g.file_length:
        parts.append(Part(PAST_END, g.file_length, file_length))
    return tuple(parts)


def _merged(runs) -> tuple[Span, ...]:
    spans: list[Span] = []
    for run in runs:
        if spans and spans[-1].source == run.source and spans[-1].end == run.start:
            spans[-1] = Span(run.source, spans[-1].start, run.end)
        else:
            spans.append(Span(run.source, run.start, run.end))
    return tuple(spans)


def _layer_view(layer: Layer) -> LayerView:
    """What one chain layer holds, from its bitmap (COW) or its extents (raw)."""
    if not layer.exists or layer.error is not None:
        return LayerView(layer.path, layer.kind or "missing", False, None, None, None,
                         problem=layer.error or "missing")
    try:
        allocated = os.stat(layer.path).st_blocks * 512
        if layer.is_cow:
            with CowImage.open(layer.path) as image:
                ss, size = image.geometry.sectorsize, image.geometry.size
                holds = tuple((start * ss, min((start + count) * ss, size))
                              for start, count in image.marked_runs())
                return LayerView(layer.path, f"COW V{image.header.version}", True, size,
                                 layer.size, allocated, holds)
        fd = os.open(layer.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            holds = tuple(data_extents(fd, 0, layer.size or 0))
        finally:
            os.close(fd)
        return LayerView(layer.path, "raw", False, layer.size, layer.size, allocated, holds)
    except (UbdError, OSError) as err:
        kind = "COW" if layer.is_cow else "raw"
        return LayerView(layer.path, kind, layer.is_cow, layer.size, layer.size, None,
                         problem=str(err) if isinstance(err, UbdError) else err.strerror)


def chain_layers(path: str, backing: str | None = None) -> tuple[tuple[LayerView, ...], str | None]:
    """The chain from `path` down (`backing` replaces the header's backing file), and the
    walk's problem line (a loop, a missing layer), if any."""
    chain = walk_chain(path)
    layers, problem = list(chain.layers), chain.problem
    if backing is not None and chain.layers and chain.layers[0].is_cow:
        lower = walk_chain(backing)
        layers, problem = [chain.layers[0], *lower.layers], lower.problem
    return tuple(_layer_view(layer) for layer in layers), problem


def describe(path: str, backing: str | None = None) -> CowLayout:
    """The layout model of the unit `path` (a COW file, or a raw image); `backing` overrides
    a COW header's backing file. Refuses what `ubdsim map` refuses (open_device)."""
    with open_device(path, backing) as view:
        st = os.fstat(view.fd)
        length = _length(view.fd, st)
        allocated = tuple(data_extents(view.fd, 0, length))
        spans = _merged(view.runs())
        image = view.image
        if image is not None:
            g = image.geometry
            parts = _cow_parts(image.header.layout.size, g, length)
            version, layout_name, ss = image.header.version, image.header.layout.name, g.sectorsize
        else:
            g, parts, version, layout_name, ss = None, (Part(DISK, 0, length),), None, None, 512
        backing_path, backing_size = view.backing, view.backing_size
        kind, device_size = view.kind, view.size
    layers, problem = chain_layers(path, backing)
    return CowLayout(path=path, kind=kind, version=version, header_layout=layout_name,
                     sectorsize=ss, device_size=device_size, backing=backing_path,
                     backing_size=backing_size, file_length=length,
                     allocated_bytes=st.st_blocks * 512, parts=parts, allocated=allocated,
                     spans=spans, layers=layers, chain_problem=problem, geometry=g)


def compare(old: str, new: str, backing: str | None = None) -> Comparison:
    """Two units side by side: `ubdsim show --compare OLD NEW`."""
    return Comparison(describe(old, backing), describe(new, backing))


SOURCE_ORDER = (COW, TAIL, RAW, BACKING)   # which source a cell shows when it holds several

__all__ = ["BACKING", "BITMAP", "COW", "DATA_AREA", "DISK", "HEADER", "PADDING", "PAST_END",
           "RAW", "SOURCE_ORDER", "TAIL", "Comparison", "CowLayout", "LayerView", "Part", "Span",
           "chain_layers", "compare", "describe"]
