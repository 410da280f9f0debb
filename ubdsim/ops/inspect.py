"""Everything `ubdsim info` reports about a COW file, as one dataclass.

Inspection must never fail on a file that has a readable header: a missing backing file, a
truncated file, alignment 0 or a sector size of 0 are *findings*, reported as backing status
or hazards, not errors. Only a file with no COW header at all (empty, short, wrong magic,
unknown version) is an error, with the kernel's reason.

The backing chain (ops/chain.py walk_chain()) is walked too: a loop (A -> B -> A, whatever
the names) is a hazard. `inspect_chain()` (`info --chain`, ubdsim's own: UML cannot stack)
reports every layer of a chain of COW files down to its raw bottom, and each link's size
and mtime match.

`summarize()` (`info --summary`) reads many COW files at once and groups them by backing file
(device and inode), naming for each backing file the COW files a `moo -d` of any one of them
would invalidate; `peek_cow()` and `files_in()` are the directory scan `moo -d` uses too.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import asdict, dataclass, field, replace

from ..cow.create import backing_size
from ..cow.header import CowHeader, probe, read_header
from ..cow.image import CowImage, header_geometry, read_fully, read_header_file
from ..cow.layouts import HEADER_READ_SIZE, V3_BROKEN
from ..cow.sizes import Geometry
from ..errors import CowFormatError, RefusedFile
from ..fileio import DISK_KINDS, is_disk_kind, kind_name, open_disk_file, shown
from ..messages import render
from .chain import Chain, walk_chain


@dataclass(frozen=True)
class HeaderField:
    name: str
    offset: int
    length: int
    value: int | str


@dataclass(frozen=True)
class BackingStatus:
    path: str
    present: bool
    size: int | None = None
    mtime: int | None = None
    size_match: bool | None = None     # None: could not be checked (missing backing file)
    mtime_match: bool | None = None
    grown: bool = False                # [resize] header size > file size, tail fully marked
    error: str | None = None


@dataclass(frozen=True)
class Hazard:
    id: str
    text: str


@dataclass(frozen=True)
class InfoReport:
    path: str
    version: int
    layout: str
    fields: list[HeaderField]
    kernel_notes: list[str]            # what read_cow_header() [6.1] prints on accepting it
    bitmap_offset: int | None
    bitmap_len: int | None
    data_offset: int | None
    sectors: int | None
    sectors_marked: int | None
    expected_length: int | None        # data_offset + size: the length a creator gives the file
    apparent_bytes: int
    allocated_bytes: int
    backing: BackingStatus
    hazards: list[Hazard] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _fields(header: CowHeader) -> list[HeaderField]:
    values = {"magic": 0x4F4F4F4D, "version": header.version, "mtime": header.mtime,
              "size": header.size, "sectorsize": header.sectorsize,
              "alignment": header.alignment, "cow_format": header.cow_format,
              "backing_file": header.backing_path}
    return [HeaderField(name, start, end - start, values[name])
            for name, start, end in header.layout.field_spans()]


def backing_status(header: CowHeader, path: str, cow_st: os.stat_result | None = None) -> BackingStatus:
    """Present / size match / mtime match, each on its own (uml_moo and the kernel stop at the first).

    A backing "file" that is a directory, FIFO or character device, or the COW file itself,
    is present but unusable: its size and mtime are not compared (they mean nothing), and
    `error` says why (`moo` refuses the same files).
    """
    try:
        st = os.stat(path)
    except OSError as err:
        return BackingStatus(path=path, present=False, error=err.strerror)
    if cow_st is not None and os.path.samestat(st, cow_st):
        return BackingStatus(path=path, present=True, error="the COW file itself (a loop)")
    if not is_disk_kind(st.st_mode):
        return BackingStatus(path=path, present=True,
                             error=f"{kind_name(st.st_mode)}, not {DISK_KINDS}")
    try:
        size = backing_size(os.fsencode(path)) if stat.S_ISBLK(st.st_mode) else st.st_size
    except OSError as err:
        return BackingStatus(path=path, present=True, error=err.strerror)
    mtime = int(st.st_mtime)
    return BackingStatus(path=path, present=True, size=size, mtime=mtime,
                         size_match=size == header.size,
                         mtime_match=(mtime & 0xFFFFFFFF) == header.mtime)


def inspect(path: str, backing: str | None = None) -> InfoReport:
    """Inspect the COW file `path` (`backing` overrides the header's backing path)."""
    header, st = read_header_file(path)
    hazards: list[Hazard] = []
    notes = [render(msg_id, "6.1") for msg_id in header.notes]
    if header.layout is V3_BROKEN:
        hazards.append(Hazard("broken_layout", "V3 header in the broken 64-bit layout (4 bytes of "
                              "padding after mtime): kernels since 2.6.15 and uml_moo recover it; "
                              "a 2.4 kernel cannot read V3 at all"))
    if header.cow_format != 0:
        hazards.append(Hazard("cow_format", f"cow_format is {header.cow_format}; only 0 (bitmap) "
                              "exists and the kernel does not check it"))
    geometry: Geometry | None = None
    try:
        geometry = header_geometry(header)
    except CowFormatError as err:
        hazard_id = "alignment_zero" if err.msg_id == "cow.align_zero" else "sector_size"
        hazards.append(Hazard(hazard_id, str(err)))
    marked = None
    if geometry is not None:
        marked = _inspect_data(path, geometry, st, hazards)
    backing_path = backing if backing is not None else header.backing_path
    loop = _loop_hazard(path, backing, st)
    if loop is not None:
        hazards.append(loop)
    status = backing_status(header, backing_path, st)
    if status.error and status.present:
        hazards.append(Hazard("backing_unusable", (
            f"the backing file '{shown(backing_path)}' is {status.error}: no disk can be read "
            "from it (a kernel would read the unmarked sectors from whatever it opens), and moo "
            "refuses to merge it")))
    if geometry is not None and status.size is not None and status.size < header.size:
        with CowImage.open(path) as image:
            if image.grown_over(status.size):
                status = replace(status, grown=True)
                hazards.append(Hazard("grown_by_resize", (
                    f"header size {header.size} > backing file size {status.size}, and every "
                    "sector past the backing file's end is marked: a COW file grown by the 2.4 "
                    "COW-resize patch. Profile 2.4 and ubdsim moo accept it (the merge is the "
                    "grown disk); Linux 6.1 and uml_moo refuse it with Size mismatch")))
    return InfoReport(
        path=path, version=header.version, layout=header.layout.name, fields=_fields(header),
        kernel_notes=notes,
        bitmap_offset=geometry.bitmap_offset if geometry else None,
        bitmap_len=geometry.bitmap_len if geometry else None,
        data_offset=geometry.data_offset if geometry else None,
        sectors=geometry.sectors if geometry else None,
        sectors_marked=marked,
        expected_length=geometry.file_length if geometry else None,
        apparent_bytes=st.st_size, allocated_bytes=st.st_blocks * 512,
        backing=status, hazards=hazards)


def _loop_hazard(path: str, backing: str | None, st: os.stat_result) -> Hazard | None:
    """The backing chain loops (walk_chain(): A -> B -> A by (st_dev, st_ino), links followed)."""
    if backing is None:
        chain = walk_chain(path)
        problem = chain.problem if chain.loop else None
    else:
        chain = walk_chain(backing)
        back = chain.contains(st)
        if back is not None:
            trail = " -> ".join(f"'{shown(layer.path)}'" for layer in chain.layers[:back + 1])
            problem = (f"backing chain loops: the backing file's chain ({trail}) leads back to "
                       f"'{shown(path)}'")
        else:
            problem = chain.problem if chain.loop else None
    if problem is None:
        return None
    return Hazard("backing_loop", (
        f"{problem}: the kernel reads the backing file raw and never follows the chain, but "
        "no chain-following tool (ubdsim --chain, qemu-img on qcow2) can read this device"))


@dataclass(frozen=True)
class ChainLink:
    """One link of a chain: layer `upper`'s header against layer `upper + 1`'s file."""

    upper: int
    path: str                          # the lower file, as the upper header names it
    present: bool
    is_cow: bool
    size: int | None
    mtime: int | None
    expected_size: int                 # what the upper header says
    expected_mtime: int
    size_match: bool | None
    mtime_match: bool | None


@dataclass(frozen=True)
class ChainInfo:
    """`ubdsim info --chain`: every layer's report (COW layers), the links, the raw bottom."""

    path: str
    layers: list[InfoReport]           # the COW layers, top first (layer i = layers[i])
    links: list[ChainLink]             # links[i]: layer i's header vs layer i+1's file
    bottom: str | None                 # the raw bottom file (None: the chain ends early)
    complete: bool
    problem: str | None                # loop, missing file, ...: one line, None when sound
    chain: dict = field(default_factory=dict)   # walk_chain()'s whole answer

    def as_dict(self) -> dict:
        return asdict(self)


def inspect_chain(path: str) -> ChainInfo:
    """Inspect `path` and every layer under it (`info --chain`)."""
    chain: Chain = walk_chain(path)
    layers = chain.layers
    reports: list[InfoReport] = []
    links: list[ChainLink] = []
    if not layers or not layers[0].is_cow:
        inspect(path)                       # raises the reason this is no COW file
    for i, layer in enumerate(layers):
        if not layer.is_cow:
            break
        reports.append(inspect(layer.path))
        if i + 1 < len(layers):
            lower = layers[i + 1]
            links.append(ChainLink(
                upper=i, path=lower.path, present=lower.exists, is_cow=lower.is_cow,
                size=lower.size, mtime=lower.mtime, expected_size=layer.header.size,
                expected_mtime=layer.header.mtime, size_match=lower.size_match,
                mtime_match=lower.mtime_match))
    problem = chain.problem
    if problem is None and layers[-1].header_error is not None:
        problem = (f"'{shown(layers[-1].path)}' has the COW magic but its header cannot be read "
                   f"({layers[-1].header_error}): the chain cannot go on through it")
    if problem is None and chain.mismatched:
        i = chain.mismatched[0]
        problem = (f"layer {i} '{shown(layers[i].path)}' does not match the COW header of layer "
                   f"{i - 1} '{shown(layers[i - 1].path)}'")
    bottom = layers[-1].path if chain.complete and not layers[-1].is_cow else None
    return ChainInfo(path=path, layers=reports, links=links, bottom=bottom,
                     complete=problem is None, problem=problem,
                     chain=chain.as_dict())


def _inspect_data(path: str, geometry: Geometry, st: os.stat_result, hazards: list[Hazard]) -> int:
    with CowImage.open(path) as image:
        marked = image.count_marked()
        if geometry.rounding_bug:
            uncovered = geometry.sectors - geometry.bitmap_len * 8
            hazards.append(Hazard("rounding_bug", (
                f"V{geometry.version} rounding bug: the bitmap has {geometry.bitmap_len} bytes "
                f"({geometry.bitmap_len * 8} bits) for {geometry.sectors} sectors; "
                f"the last {uncovered} sectors have no bit, so the kernel's bitmap write-back for them lands "
                "after the bitmap and is never read back; ubdsim moo takes them from the backing "
                "file, uml_moo from wherever the heap bytes past its bitmap buffer point")))
            slack, _ = image.bits_after_bitmap()
            if slack:
                hazards.append(Hazard("bits_after_bitmap", (
                    f"{slack} bits are set in the bytes between the bitmap's end and the data area: "
                    "a kernel wrote sectors that have no bit; their data is in the COW file but "
                    "no reader will see it")))
        past = image.bits_past_end()
        if past:
            hazards.append(Hazard("bits_past_end", (
                f"{past} bits are set for sectors past the last one ({geometry.sectors}): "
                "written by something that is not the kernel, or a resized file")))
        if image.bitmap_present < geometry.bitmap_len or st.st_size < geometry.data_offset:
            hazards.append(Hazard("truncated", (
                f"the file ({st.st_size} bytes) ends before the data area starts "
                f"({geometry.data_offset}): truncated; missing bitmap bytes read as clear")))
        return marked


# -- info --summary: COW files grouped by backing file ----------------------------------------
#
# Many guests share one backing file, and a `moo -d` of any one of them rewrites that file's
# bytes and mtime, so every other COW file over it stops matching (the kernel and every tool
# here refuse a COW file whose backing mtime changed). The summary groups COW files by the
# backing file their header names, identified by (st_dev, st_ino) so that every spelling of a
# path (relative, through a link, another hard link) is one group; a missing backing file is
# grouped by its absolute path. Headers are read through fileio.open_disk_file(): a FIFO or a
# directory is never opened for data, and nothing is locked or written.

SKIPPED_SUFFIXES = (".ubdsim-tmp", ".ubdsim-merge")   # half-built files and merge journals


@dataclass(frozen=True)
class PeekedCow:
    """A file with a readable COW header, as a directory scan finds it."""

    path: str
    header: CowHeader
    st: os.stat_result


def peek_cow(path: str) -> tuple[PeekedCow | None, str | None]:
    """(the COW file at `path`, None), (None, why it is not one), or (None, None) for a file
    without the COW magic (a raw image: a scan passes over it without a word)."""
    try:
        fd = open_disk_file(path, os.O_RDONLY, "file")
    except RefusedFile as err:
        return None, str(err)
    except OSError as err:
        return None, err.strerror or str(err)
    try:
        st = os.fstat(fd)
        data = read_fully(fd, min(HEADER_READ_SIZE, st.st_size), 0)
    except OSError as err:
        return None, err.strerror or str(err)
    finally:
        os.close(fd)
    if probe(data) is None:
        return None, None
    try:
        return PeekedCow(path, read_header(data), st), None
    except CowFormatError as err:
        return None, f"COW magic, but {err.message}"


def files_in(directory: str) -> list[str]:
    """The regular files (links followed) directly in `directory`, sorted by name; merge
    journals and half-built temporary files are left out."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(SKIPPED_SUFFIXES):
                continue
            try:
                if entry.is_file():          # follows symlinks; FIFOs, sockets, devices: no
                    found.append(entry.name if directory == "." else
                                 os.path.join(directory, entry.name))
            except OSError:
                continue
    return sorted(found, key=_natural)


def _natural(name: str) -> list:
    """guest2 before guest10 (numbers compared as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name)]


def backing_identity(name: str, cache: dict[str, object] | None = None) -> os.stat_result | OSError:
    """stat() of a header's backing path as the kernel opens it (relative to the working
    directory), or the error; `cache` spares one stat per distinct name in a scan."""
    if cache is not None and name in cache:
        return cache[name]                                   # type: ignore[return-value]
    try:
        result: os.stat_result | OSError = os.stat(name)
    except OSError as err:
        result = err
    if cache is not None:
        cache[name] = result
    return result


@dataclass(frozen=True)
class SummaryCow:
    """One COW file's line in `info --summary`."""

    path: str
    version: int
    size: int                          # the disk's bytes, as the header says
    sectors: int | None                # None: the header's geometry places nothing
    sectors_marked: int | None
    apparent_bytes: int                # st_size
    allocated_bytes: int               # st_blocks * 512
    backing_file: str                  # as the header names it
    size_match: bool | None            # None: the backing file is missing
    mtime_match: bool | None


@dataclass(frozen=True)
class BackingGroup:
    """The COW files over one backing file."""

    backing: str                       # absolute path (the first header's name for it)
    names: list[str]                   # every spelling the headers use for it
    present: bool
    dev: int | None
    ino: int | None
    size: int | None
    mtime: int | None
    apparent_bytes: int | None
    allocated_bytes: int | None
    error: str | None                  # missing, or not a disk image
    cows: list[SummaryCow]
    cow_apparent_bytes: int
    cow_allocated_bytes: int
    # The COW files that match the backing file now: a `moo -d` of any one of them rewrites
    # the backing file and invalidates all the others in this list (empty with fewer than 2).
    at_risk: list[str]


@dataclass(frozen=True)
class NotCow:
    path: str
    reason: str


@dataclass(frozen=True)
class CowSummaryReport:
    """`ubdsim info --summary`: COW files grouped by backing file."""

    groups: list[BackingGroup]
    not_cow: list[NotCow]              # named files that are not COW files (and why)
    cows: int
    apparent_bytes: int                # of the COW files
    allocated_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _summary_cow(found: PeekedCow, backing: os.stat_result | OSError) -> SummaryCow:
    header, st = found.header, found.st
    sectors = marked = None
    try:
        geometry = header_geometry(header)
        sectors = geometry.sectors
        with CowImage.open(found.path) as image:
            marked = image.count_marked()
    except (CowFormatError, OSError):
        pass
    size_match = mtime_match = None
    if isinstance(backing, os.stat_result) and is_disk_kind(backing.st_mode):
        try:
            actual = (backing_size(os.fsencode(header.backing_path))
                      if stat.S_ISBLK(backing.st_mode) else backing.st_size)
            size_match = actual == header.size
        except OSError:
            pass
        mtime_match = (int(backing.st_mtime) & 0xFFFFFFFF) == header.mtime
    return SummaryCow(path=found.path, version=header.version, size=header.size,
                      sectors=sectors, sectors_marked=marked, apparent_bytes=st.st_size,
                      allocated_bytes=st.st_blocks * 512, backing_file=header.backing_path,
                      size_match=size_match, mtime_match=mtime_match)


def summarize(paths: list[str]) -> CowSummaryReport:
    """Group the COW files among `paths` by backing file. A directory stands for the COW files
    directly in it (other files there are passed over); a named file that is not a COW file
    is listed in `not_cow` with the reason."""
    found: list[PeekedCow] = []
    not_cow: list[NotCow] = []
    seen: set[tuple[int, int]] = set()

    def take(path: str, named: bool) -> None:
        cow, why = peek_cow(path)
        if cow is None:
            if named or why is not None and why.startswith("COW magic"):
                not_cow.append(NotCow(path, why or "no COW magic: not a COW file"))
            return
        if (cow.st.st_dev, cow.st.st_ino) not in seen:      # one file named twice: once
            seen.add((cow.st.st_dev, cow.st.st_ino))
            found.append(cow)

    for path in paths:
        if os.path.isdir(path):
            for name in files_in(path):
                take(name, named=False)
        else:
            take(path, named=True)
    cache: dict[str, object] = {}
    keyed: dict[object, list[tuple[PeekedCow, os.stat_result | OSError]]] = {}
    for cow in found:
        backing = backing_identity(cow.header.backing_path, cache)
        key = ((backing.st_dev, backing.st_ino) if isinstance(backing, os.stat_result)
               else ("missing", os.path.abspath(cow.header.backing_path)))
        keyed.setdefault(key, []).append((cow, backing))
    groups = [_group(members) for members in keyed.values()]
    cows = [c for g in groups for c in g.cows]
    return CowSummaryReport(groups=groups, not_cow=not_cow, cows=len(cows),
                            apparent_bytes=sum(c.apparent_bytes for c in cows),
                            allocated_bytes=sum(c.allocated_bytes for c in cows))


def _group(members: list[tuple[PeekedCow, os.stat_result | OSError]]) -> BackingGroup:
    first, backing = members[0]
    names = list(dict.fromkeys(cow.header.backing_path for cow, _ in members))
    rows = [_summary_cow(cow, b) for cow, b in members]
    # What a merge changes is the backing file's mtime (and bytes): a COW file whose header
    # mtime still matches is one it breaks (a size mismatch alone may be a 2.4-grown file).
    matching = [row.path for row in rows if row.mtime_match]
    common = dict(backing=os.path.abspath(first.header.backing_path), names=names, cows=rows,
                  cow_apparent_bytes=sum(r.apparent_bytes for r in rows),
                  cow_allocated_bytes=sum(r.allocated_bytes for r in rows))
    if isinstance(backing, OSError):
        return BackingGroup(present=False, dev=None, ino=None, size=None, mtime=None,
                            apparent_bytes=None, allocated_bytes=None,
                            error=backing.strerror or str(backing), at_risk=[], **common)
    error = None if is_disk_kind(backing.st_mode) else f"{kind_name(backing.st_mode)}, not {DISK_KINDS}"
    size = None
    if error is None:
        try:
            size = backing_size(os.fsencode(first.header.backing_path))
        except OSError as err:
            error = err.strerror
    return BackingGroup(present=True, dev=backing.st_dev, ino=backing.st_ino,
                        size=size, mtime=int(backing.st_mtime),
                        apparent_bytes=backing.st_size, allocated_bytes=backing.st_blocks * 512,
                        error=error, at_risk=matching if len(matching) > 1 and not error else [],
                        **common)
