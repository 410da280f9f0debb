"""Reading and writing COW headers: pure functions over bytes, never paths.

From: `arch/um/drivers/cow_user.c` read_cow_header() and write_cow_header() [6.1]; which
versions a kernel accepts is profile data (`ubdsim.profiles.format_rules`).

Probing a file's first bytes decides whether the kernel treats it as a COW file or as a raw
disk, and the content is guest-controlled: a guest that writes a COW magic at sector 0 of a
raw disk changes how the next boot opens it (QEMU's CVE-2008-2004 class of problem). ubdsim
reproduces the kernel's probe faithfully; `ubdsim info` reports what it decided.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from ..errors import BadVersion, NotCowFile, ShortHeader, UbdError
from ..profiles.format_rules import FormatRules
from .layouts import COW_MAGIC, MAGIC_AND_VERSION, V1, V2, V3, V3_BROKEN, HeaderLayout
from .sizes import Geometry, geometry

# Every reader that can read anything: used by tools (info, moo) that are not a kernel.
ALL_VERSIONS = FormatRules(readable_versions=frozenset({1, 2, 3}), recovers_broken_v3=True,
                           created_version=3, created_alignment=4096, switch_version=3)


@dataclass(frozen=True)
class CowHeader:
    """The values of a COW header, whatever layout they came from."""

    layout: HeaderLayout
    backing_file: bytes          # up to the first NUL, as stored (the kernel's cow_strdup())
    mtime: int
    size: int
    sectorsize: int
    alignment: int               # V1/V2: the sector size (read_cow_header() sets align = ss)
    cow_format: int = 0
    # Message ids read_cow_header() printed while accepting this header, in order.
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def version(self) -> int:
        return self.layout.version

    @property
    def backing_path(self) -> str:
        """The backing path as a str (undecodable bytes kept via surrogateescape)."""
        return self.backing_file.decode("utf-8", "surrogateescape")

    def geometry(self) -> Geometry:
        return geometry(self.layout, self.size, self.sectorsize, self.alignment)

    def with_layout(self, layout: HeaderLayout) -> "CowHeader":
        """The same values in another layout (a V3 switch over a V2 file, say)."""
        return replace(self, layout=layout, notes=())


def has_magic(data: bytes) -> bool:
    """Does `data` start with the COW magic in either byte order (however short the rest)?"""
    if len(data) < 4:
        return False
    return COW_MAGIC in (struct.unpack_from("<I", data)[0], struct.unpack_from(">I", data)[0])


def probe(data: bytes) -> int | None:
    """The version a file announces, or None when the magic is absent (raw file).

    read_cow_header(): magic in host order means the version is read in host order; magic
    byte-swapped means the version is read big-endian. The fields are then read in the
    byte order of that version's layout, not of the magic.
    """
    if len(data) < MAGIC_AND_VERSION:
        return None
    magic_le, version_le = struct.unpack_from("<II", data)
    if magic_le == COW_MAGIC:
        return version_le
    magic_be, version_be = struct.unpack_from(">II", data)
    if magic_be == COW_MAGIC:
        return version_be
    return None


def read_header(data: bytes, rules: FormatRules = ALL_VERSIONS) -> CowHeader:
    """Parse the first bytes of a file (up to layouts.HEADER_READ_SIZE) like read_cow_header().

    Raises ShortHeader, NotCowFile or BadVersion; each exception's `printed` lists the
    message ids the kernel would have printed before failing, in order.
    """
    printed: list[str] = []
    if len(data) < MAGIC_AND_VERSION:
        raise _fail(ShortHeader, "cow.short_header", printed,
                    f"short header: {len(data)} bytes, at least {MAGIC_AND_VERSION} needed")
    version = probe(data)
    if version is None:
        raise _fail(NotCowFile, None, printed, "no COW magic: not a COW file")
    layout = _layout_for(version, data, rules)
    if layout is None:
        raise _fail(BadVersion, "cow.bad_version", printed, f"invalid COW version {version}")
    if layout is V3_BROKEN:
        printed.append("cow.broken_v3")
    if len(data) < layout.size:
        raise _fail(ShortHeader, f"cow.short_v{layout.version}", printed,
                    f"short {layout.name} header: {len(data)} of {layout.size} bytes")
    values = dict(zip(layout.value_fields, struct.unpack_from(layout.fmt, data)))
    if layout in (V1, V2):
        values["alignment"] = values["sectorsize"]
        values["cow_format"] = 0
    elif values["alignment"] == 0:
        printed.append("cow.align_zero")
    backing = values["backing_file"].split(b"\0", 1)[0]
    return CowHeader(layout=layout, backing_file=backing, mtime=values["mtime"],
                     size=values["size"], sectorsize=values["sectorsize"],
                     alignment=values["alignment"], cow_format=values["cow_format"],
                     notes=tuple(printed))


def _layout_for(version: int, data: bytes, rules: FormatRules) -> HeaderLayout | None:
    if version not in rules.readable_versions:
        return None
    if version == 1:
        return V1
    if version == 2:
        return V2
    if version == 3:
        # "This is very subtle": a packed V3 never has 4 zero bytes where its backing path
        # starts, the unpacked 64-bit struct always does (cow_format 0 sits there).
        path_start = V3.offset_of("backing_file")
        broken = data[path_start:path_start + 4] == b"\0\0\0\0"
        if broken:
            return V3_BROKEN if rules.recovers_broken_v3 else None
        return V3
    return None


def _fail(kind: type[UbdError], msg_id: str | None, printed: list[str], detail: str) -> UbdError:
    if msg_id is not None:
        printed.append(msg_id)
    err = kind(detail, msg_id=msg_id)
    err.printed = tuple(printed)  # type: ignore[attr-defined]
    return err


def pack_header(header: CowHeader) -> bytes:
    """The bytes of `header` in its layout, padding and the rest of the path zeroed.

    write_cow_header() fills a malloc'ed buffer, so the kernel's own padding bytes are
    whatever the allocator returned; uml_mkcow's come out zero. ubdsim always writes zeros.
    """
    layout = header.layout
    if len(header.backing_file) >= layout.path_len:
        raise UbdError(f"backing path of {len(header.backing_file)} bytes does not fit a "
                       f"{layout.name} header (at most {layout.path_len - 1})",
                       msg_id="cow.name_too_long")
    values = {"magic": COW_MAGIC, "version": layout.version, "backing_file": header.backing_file,
              "mtime": header.mtime & 0xFFFFFFFF, "size": header.size,
              "sectorsize": header.sectorsize, "alignment": header.alignment,
              "cow_format": header.cow_format}
    return struct.pack(layout.fmt, *(values[name] for name in layout.value_fields))


def new_header(version: int, backing_file: bytes, mtime: int, size: int, sectorsize: int = 512,
               alignment: int = 4096) -> CowHeader:
    """A header for a new COW file of `version` (1, 2 or 3)."""
    layout = {1: V1, 2: V2, 3: V3}[version]
    if version < 3:
        alignment = sectorsize
    return CowHeader(layout=layout, backing_file=backing_file, mtime=mtime, size=size,
                     sectorsize=sectorsize, alignment=alignment)
