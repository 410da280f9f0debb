"""COW chains, ubdsim's own opt-in (`--chain`): a stack of read-only COW layers over a raw file.

The kernel cannot stack. ubd_open_dev() [6.1] (and 2.4's) opens a unit's backing file with
open_ubd_file(..., NULL): read raw, never probed for a header, so a COW file used as a
backing file shows the guest its header and bitmap as disk sectors (`ubdsim check` says so:
`backing.is_cow`). That stays the default. With `--chain` (run, serve, vm) a unit's backing
file that is itself a COW file is read as what its user meant: a read-only COW layer over
ITS backing file, recursively, down to a raw bottom file, the way qemu reads a qcow2 backing
chain. The top COW file is opened, checked, locked, created and written by the kernel's own
code path, byte for byte as today; only where the Unit would pread the backing file does it
read this stack instead.

Layers are numbered from the top: layer 0 is the unit's COW file, layer 1 its backing file,
..., layer N the raw bottom. Each link is checked as the kernel checks the top one
(backing_file_mismatch(): the lower file's size and mtime against the header above it), the
walk itself (ops/chain.py walk_chain()) refuses loops, missing files, files that are no
disk, and chains deeper than its limit. Every refusal is one line of ubdsim's own, prefixed
`ubdsim: chain:`, naming the layer.

The stack is read as a plain device: a sector unmarked in a layer comes from the layer
below (its COW data if marked there, and so on down to the raw bottom); there is no do_io()
arithmetic below the top (the 6.1 offset drift applies to the top layer's request only, as
the Unit computes it), and bytes past the bottom file's end read as zeros.

The same stack serves the tools (`moo --chain`, `map --chain`): `ChainStack` with layer 0
at the top reads the whole device, and `sources()` says which layer holds each byte.
"""
from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..cow import bitmap as bits
from ..cow.image import CowImage, read_fully
from ..errors import CowFormatError, LockedError, UbdError
from ..fileio import open_disk_file, shown
from ..ops.chain import Chain, Layer, walk_chain
from .locking import holder_pid, lock_file

PREFIX = "ubdsim: chain:"

# Above this many sectors a layer's runs are found through its bitmap's data extents
# (SEEK_DATA: a hole costs nothing); below it, one numpy pass over the mapped bits is cheaper.
_EXTENT_WALK_SECTORS = 1 << 20

Locker = Callable[[int, str, int], None]        # (fd, path, layer number): raise to refuse


class ChainRefused(UbdError):
    """A chain that cannot be read as a stack; `str()` is the one line (without the prefix)."""


@dataclass(frozen=True)
class ChainPlan:
    """A walked, checked chain: `chain.layers[i]` is layer `first + i`, the last one raw."""

    chain: Chain
    first: int

    @property
    def layers(self) -> tuple[Layer, ...]:
        return self.chain.layers

    @property
    def size(self) -> int:
        """The device the stack is: the raw bottom file's size."""
        return self.chain.layers[-1].size or 0

    def describe(self, name: str, top: str | None = None) -> str:
        """The one line naming the layers (`top`: the unit's own COW file, layer 0)."""
        parts = [] if top is None else [f"'{shown(top)}' (layer 0, COW, the unit's file)"]
        for i, layer in enumerate(self.layers):
            kind = "COW" if layer.is_cow else "raw"
            parts.append(f"'{shown(layer.path)}' (layer {self.first + i}, {kind}, read-only)")
        where = f"'{shown(top)}'" if top is not None else "nowhere (read-only)"
        return (f"{PREFIX} {name}: " + " over ".join(parts)
                + f"; {self.size} bytes; writes go to {where} only")


def _loop_text(layers: list[Layer], first: int, again: int) -> str:
    """`layers[-1]`'s header names `layers[again]` again (indexes into `layers`)."""
    last = len(layers) - 1
    above = layers[last]
    named = above.header.backing_path if above.header is not None else "?"
    what = f"'{shown(layers[again].path)}'"
    if again == last:
        return (f"backing chain loops: '{shown(above.path)}' (layer {first + last}) names itself "
                f"as its backing file (as '{shown(named)}')")
    return (f"backing chain loops: '{shown(above.path)}' (layer {first + last}) names "
            f"'{shown(named)}', which is {what} (layer {first + again}) again")


def refusal(chain: Chain, first: int = 0, top: str | None = None,
            top_st: os.stat_result | None = None) -> str | None:
    """None when `chain` can be read as a stack, else the one line that says why not.

    `chain.layers[i]` is layer `first + i`; `top`/`top_st` name layer 0 when the walk
    started below it (a unit's backing file), so a chain leading back to the unit's own COW
    file is a loop too."""
    layers = list(chain.layers)
    if top_st is not None:
        back = chain.contains(top_st)
        if back == 0:
            return (f"backing chain loops: layer {first} '{shown(layers[0].path)}' is the unit's "
                    f"own COW file '{shown(top or '?')}'")
        if back is not None:
            above = layers[back - 1]
            return (f"backing chain loops: '{shown(above.path)}' (layer {first + back - 1}) names "
                    f"'{shown(above.header.backing_path)}', which is the unit's own COW file "
                    f"'{shown(top or '?')}' (layer 0) again")
    if chain.loop:
        return _loop_text(layers, first, chain.loop_to)
    last = first + len(layers) - 1
    bottom = layers[-1]
    if chain.missing:
        upper = layers[-2].path if len(layers) > 1 else top
        named = f" named by '{shown(upper)}' (layer {last - 1})" if upper is not None else ""
        return f"'{shown(bottom.path)}' (layer {last}){named} does not exist ({bottom.error})"
    if chain.unusable:
        return f"'{shown(bottom.path)}' (layer {last}) cannot be read as a disk image: {bottom.error}"
    if chain.depth_exceeded:
        return chain.problem
    for i, layer in enumerate(layers[1:], start=1):
        wrong = []
        upper = layers[i - 1].header
        if layer.size_match is False:
            wrong.append(f"size {layer.size}, the header says {upper.size}")
        if layer.mtime_match is False:
            wrong.append(f"mtime {layer.mtime}, the header says {upper.mtime}")
        if wrong:
            return (f"layer {first + i} '{shown(layer.path)}' does not match the COW header of "
                    f"layer {first + i - 1} '{shown(layers[i - 1].path)}': "
                    + "; ".join(wrong) + " (backing_file_mismatch()'s test)")
    if bottom.header_error is not None:
        return (f"'{shown(bottom.path)}' (layer {last}) has the COW magic but its header cannot "
                f"be read: {bottom.header_error}")
    return None


def plan(path: str, first: int = 0, top: str | None = None,
         top_st: os.stat_result | None = None) -> ChainPlan | None:
    """Walk the chain from `path` (layer `first`) and check it.

    None when `path` is not a readable COW file (no chain: a unit over a raw backing file
    reads it as always, and the kernel's own path reports what is wrong with it).
    Raises ChainRefused (one line) for a chain that cannot be read."""
    chain = walk_chain(path)
    if not chain.layers or not chain.layers[0].is_cow:
        return None
    problem = refusal(chain, first, top, top_st)
    if problem is not None:
        raise ChainRefused(problem, errno=_errno.ELOOP if "loops" in problem else _errno.EINVAL)
    return ChainPlan(chain, first)


class ChainStack:
    """Read-only COW layers (`images`, top first) over a raw bottom file: a plain device."""

    def __init__(self, images: list[CowImage], bottom_fd: int, bottom_path: str, size: int,
                 first: int = 0) -> None:
        self.images = images
        self.bottom_fd = bottom_fd
        self.bottom_path = bottom_path
        self.size = size
        self.first = first

    @property
    def depth(self) -> int:
        """The bottom's layer number."""
        return self.first + len(self.images)

    def path_of(self, layer: int) -> str:
        level = layer - self.first
        return self.images[level].path if level < len(self.images) else self.bottom_path

    def fd_of(self, layer: int) -> int:
        level = layer - self.first
        return self.images[level].fd if level < len(self.images) else self.bottom_fd

    def host_offset(self, layer: int, offset: int) -> int:
        """Where device byte `offset` lives in layer `layer`'s file."""
        level = layer - self.first
        if level < len(self.images):
            return self.images[level].geometry.data_offset + offset
        return offset

    def sources(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        """(layer, start, end): which layer holds each byte of [lo, hi), in order."""
        yield from self._sources(0, lo, hi)

    def _sources(self, level: int, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        if lo >= hi:
            return
        if level == len(self.images):
            yield self.first + level, lo, hi
            return
        image = self.images[level]
        ss = image.geometry.sectorsize
        first, last = lo // ss, -(-hi // ss)
        if last - first > _EXTENT_WALK_SECTORS:
            runs = ((e.marked, e.start, e.count) for e in image.extents(first, last))
        else:
            runs = bits.iter_runs(image.bitmap, first, last - first)
        for marked, sector, count in runs:
            a, b = max(lo, sector * ss), min(hi, (sector + count) * ss)
            if a >= b:
                continue
            if marked:
                yield self.first + level, a, b
            else:
                yield from self._sources(level + 1, a, b)

    def read_into(self, out: memoryview, offset: int) -> None:
        """Device bytes [offset, offset+len(out)); past the bottom file's end: zeros."""
        for layer, lo, hi in self.sources(offset, offset + len(out)):
            read_fully(self.fd_of(layer), hi - lo, self.host_offset(layer, lo),
                       out[lo - offset:hi - offset])

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.read_into(memoryview(buf), offset)
        return bytes(buf)

    def close(self) -> None:
        for image in self.images:
            image.close()
        self.images = []
        if self.bottom_fd >= 0:
            os.close(self.bottom_fd)
            self.bottom_fd = -1

    def __enter__(self) -> "ChainStack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_stack(chain_plan: ChainPlan, lock: Locker | None = None) -> ChainStack:
    """Open every layer of a checked plan read-only (`lock` is called on each fd).

    Raises ChainRefused when a layer is not the file the walk found (replaced in between)
    or has a header no geometry fits; whatever `lock` raises (LockedError) goes through."""
    images: list[CowImage] = []
    bottom_fd = -1
    try:
        for i, layer in enumerate(chain_plan.layers):
            number = chain_plan.first + i
            if layer.is_cow:
                try:
                    image = CowImage.open(layer.path)
                except CowFormatError as err:
                    raise ChainRefused(f"'{shown(layer.path)}' (layer {number}): {err}") from None
                images.append(image)
                fd = image.fd
            else:
                fd = bottom_fd = open_disk_file(layer.path, os.O_RDONLY, "backing file")
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != layer.identity:
                raise ChainRefused(f"'{shown(layer.path)}' (layer {number}) was replaced while "
                                   "the chain was opened")
            if lock is not None:
                lock(fd, layer.path, number)
        return ChainStack(images, bottom_fd, chain_plan.layers[-1].path, chain_plan.size,
                          chain_plan.first)
    except BaseException:
        for image in images:
            image.close()
        if bottom_fd >= 0:
            os.close(bottom_fd)
        raise


def device_locker(fd: int, path: str, number: int) -> None:
    """A lower layer's read lock, as the 6.1 driver locks a backing file (F_RDLCK): a layer
    a running guest holds writable (its own top COW file) is refused, never read while it
    changes."""
    try:
        lock_file(fd, path, False, [])
    except LockedError as err:
        try:
            pid = holder_pid(fd, False)
        except OSError:
            pid = 0
        who = f"process {pid}" if pid else "another process"
        raise ChainRefused(f"'{shown(path)}' (layer {number}) is locked by {who}: it is being "
                           "written, refusing to read it as a layer", errno=err.errno) from None


__all__ = ["PREFIX", "ChainPlan", "ChainRefused", "ChainStack", "device_locker", "open_stack",
           "plan", "refusal"]
