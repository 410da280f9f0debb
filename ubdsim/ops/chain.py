"""Walking a COW file's backing chain: COW -> its header's backing file -> that file's backing
file if it is a COW file too -> ... down to a raw disk image.

The kernel itself knows no chains: ubd_kern.c ubd_open_dev() [6.1] opens the backing file
with open_ubd_file(..., NULL) -- read raw, never probed for a header -- so a COW file used as
a backing file shows the guest its header and bitmap as disk bytes. Tools still need the
walk: `rebase` must refuse to make a loop, `info`/`check` must report one, and a tool that
follows chains the way qemu-img follows qcow2 backing files must not spin forever on a loop
(qemu-img 7.2 `check` and `convert` do on a qcow2 A -> B -> A chain that `qemu-img rebase -u`
created without a word).

So the walker:
- identifies files by (st_dev, st_ino), links and other names followed: a COW file naming
  itself, A -> B -> A, or A -> B -> C -> B are loops whatever the spelling of the paths;
- opens every layer with fileio.open_disk_file() (O_NONBLOCK, kind checked on the fd): a FIFO
  or a directory in the chain is reported, never waited on;
- stops at a missing or unusable file, at a file that is not a COW file (the raw bottom),
  and after `max_depth` layers;
- records, for every link, whether the lower file has the size and mtime the upper header
  expects (the kernel's backing_file_mismatch() test, each field on its own).
Header paths are used as stored: a relative one is relative to the working directory, as
the kernel and uml_moo open it (qemu resolves relative backing names against the overlay's
directory instead).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from ..cow.header import CowHeader, probe, read_header
from ..cow.image import read_fully
from ..cow.layouts import HEADER_READ_SIZE
from ..errors import CowFormatError, RefusedFile
from ..fileio import kind_name, open_disk_file, shown

MAX_DEPTH = 64


@dataclass(frozen=True)
class Layer:
    """One file of a chain: the top (index 0, named by the caller) or a backing file (named by
    the header of the layer above it)."""

    path: str                          # as named (by the caller, or by the upper header)
    exists: bool
    kind: str | None = None            # "a regular file", "a FIFO", ... (None: missing)
    dev: int | None = None
    ino: int | None = None
    size: int | None = None            # st_size, or the device size of a block device
    mtime: int | None = None           # whole seconds, as the kernel compares it
    is_cow: bool = False               # a readable COW header (then `header` is set)
    header: CowHeader | None = field(default=None, repr=False)
    header_error: str | None = None    # COW magic, but a header no reader accepts
    size_match: bool | None = None     # vs the upper header's size (None: top, or not known)
    mtime_match: bool | None = None    # vs the upper header's mtime
    error: str | None = None           # why the chain cannot go on through this file

    @property
    def identity(self) -> tuple[int, int] | None:
        return None if self.dev is None else (self.dev, self.ino)

    def as_dict(self) -> dict:
        header = None
        if self.header is not None:
            h = self.header
            header = {"version": h.version, "layout": h.layout.name,
                      "backing_file": h.backing_path, "mtime": h.mtime, "size": h.size,
                      "sectorsize": h.sectorsize, "alignment": h.alignment,
                      "cow_format": h.cow_format}
        return {"path": self.path, "exists": self.exists, "kind": self.kind, "dev": self.dev,
                "ino": self.ino, "size": self.size, "mtime": self.mtime, "is_cow": self.is_cow,
                "header": header, "header_error": self.header_error,
                "size_match": self.size_match, "mtime_match": self.mtime_match,
                "error": self.error}


@dataclass(frozen=True)
class Chain:
    """The layers from the top down, and why the walk stopped where it did."""

    top: str
    layers: tuple[Layer, ...]
    loop_to: int | None = None         # the last layer's header names layers[loop_to] again
    missing: bool = False              # the last layer does not exist
    unusable: bool = False             # the last layer exists but cannot be read as a disk
    depth_exceeded: bool = False       # more than max_depth layers (the walk stopped)
    problem: str | None = None         # one line, None when the chain ends in a raw file

    @property
    def loop(self) -> bool:
        return self.loop_to is not None

    @property
    def complete(self) -> bool:
        """Ends in a readable file that is not a COW file, every link present."""
        return self.problem is None

    @property
    def mismatched(self) -> list[int]:
        """Indexes of layers whose size or mtime differs from what the header above expects."""
        return [i for i, layer in enumerate(self.layers)
                if layer.size_match is False or layer.mtime_match is False]

    def contains(self, st: os.stat_result) -> int | None:
        """The index of the layer that is the file `st` describes, or None."""
        for i, layer in enumerate(self.layers):
            if layer.identity == (st.st_dev, st.st_ino):
                return i
        return None

    def as_dict(self) -> dict:
        return {"top": self.top, "layers": [layer.as_dict() for layer in self.layers],
                "loop": self.loop, "loop_to": self.loop_to, "missing": self.missing,
                "unusable": self.unusable, "depth_exceeded": self.depth_exceeded,
                "complete": self.complete, "problem": self.problem}


def _disk_size(fd: int, st: os.stat_result) -> int:
    """os_file_size() [6.1]: st_size, or the device's size for a block device."""
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def _probe(path: str, upper: CowHeader | None) -> Layer:
    """Open `path` without blocking and describe it (one Layer, never an exception)."""
    role = "file" if upper is None else "backing file"
    try:
        fd = open_disk_file(path, os.O_RDONLY, role)
    except RefusedFile as err:
        try:
            st = os.stat(path)
        except OSError:
            return Layer(path=path, exists=False, error=str(err))
        return Layer(path=path, exists=True, kind=kind_name(st.st_mode), dev=st.st_dev,
                     ino=st.st_ino, error=f"{kind_name(st.st_mode)}, not a disk image")
    except OSError as err:
        try:
            st = os.stat(path)
        except OSError:
            return Layer(path=path, exists=False, error=err.strerror)
        return Layer(path=path, exists=True, kind=kind_name(st.st_mode), dev=st.st_dev,
                     ino=st.st_ino, error=err.strerror)
    try:
        st = os.fstat(fd)
        size = _disk_size(fd, st)
        data = read_fully(fd, min(HEADER_READ_SIZE, size), 0)
    except OSError as err:
        os.close(fd)
        return Layer(path=path, exists=True, kind=kind_name(st.st_mode), dev=st.st_dev,
                     ino=st.st_ino, error=err.strerror)
    os.close(fd)
    header = header_error = None
    if probe(data) is not None:
        try:
            header = read_header(data)
        except CowFormatError as err:
            header_error = err.message
    mtime = int(st.st_mtime)
    size_match = mtime_match = None
    if upper is not None:
        size_match = size == upper.size
        mtime_match = (mtime & 0xFFFFFFFF) == upper.mtime
    return Layer(path=path, exists=True, kind=kind_name(st.st_mode), dev=st.st_dev,
                 ino=st.st_ino, size=size, mtime=mtime, is_cow=header is not None,
                 header=header, header_error=header_error, size_match=size_match,
                 mtime_match=mtime_match)


def walk_chain(path: str | bytes, *, max_depth: int = MAX_DEPTH) -> Chain:
    """The backing chain of `path`, top first; never raises for what it finds, never blocks."""
    top = os.fsdecode(path)
    layers: list[Layer] = []
    seen: dict[tuple[int, int], int] = {}
    name, upper = top, None
    while True:
        if len(layers) >= max_depth:
            return Chain(top, tuple(layers), depth_exceeded=True,
                         problem=f"backing chain of '{shown(top)}' is deeper than {max_depth} "
                                 "layers: not followed further")
        layer = _probe(name, upper)
        if layer.identity is not None and layer.identity in seen:
            again = seen[layer.identity]
            above = layers[-1]
            if again == len(layers) - 1:
                what = f"'{shown(above.path)}' names itself as its backing file"
            else:
                what = (f"'{shown(above.path)}' names '{shown(name)}' as its backing file, "
                        f"which is '{shown(layers[again].path)}' (layer {again}) again")
            if name != layers[again].path and again == len(layers) - 1:
                what += f" (as '{shown(name)}')"
            return Chain(top, tuple(layers), loop_to=again,
                         problem=f"backing chain loops: {what}")
        layers.append(layer)
        if not layer.exists:
            named = "" if upper is None else f" named by '{shown(layers[-2].path)}'"
            return Chain(top, tuple(layers), missing=True,
                         problem=f"'{shown(name)}'{named} does not exist ({layer.error})")
        if layer.error is not None:
            return Chain(top, tuple(layers), unusable=True,
                         problem=f"'{shown(name)}' cannot be read as a disk image: {layer.error}")
        seen[layer.identity] = len(layers) - 1
        if not layer.is_cow:
            return Chain(top, tuple(layers))
        upper = layer.header
        name = upper.backing_path


__all__ = ["MAX_DEPTH", "Chain", "Layer", "walk_chain"]
