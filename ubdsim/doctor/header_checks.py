"""Findings about the header alone: magic, version, sizes, the path field, layout quirks.

Each text names what the kernel does with the value (cow_user.c read_cow_header() and
cow_sizes(), ubd_kern.c [6.1]; the 2.4.20 driver as the spec describes it).
"""
from __future__ import annotations

from ..cow.header import CowHeader
from ..cow.layouts import V1, V2, V3_BROKEN
from ..profiles import PROFILES, Profile
from .findings import CORRUPTION, LEAK, WARNING, Finding

KERNEL_SECTOR = 512             # ubd_kern.c [6.1]: io_req->sectorsize = SECTOR_SIZE


def _refusing_profiles(readable: callable) -> list[str]:
    return [name for name, p in PROFILES.items() if not readable(p)]


def _by_profile(profile: Profile | None, refuses: list[str], fid: str, text: str) -> Finding | None:
    """A finding that is damage for a profile that refuses the file, a warning otherwise."""
    if profile is not None:
        if profile.name not in refuses:
            return None
        return Finding(fid, CORRUPTION, f"profile {profile.name}: {text}")
    if not refuses:
        return None
    return Finding(fid, WARNING, f"profile{'s' if len(refuses) > 1 else ''} "
                                 f"{', '.join(refuses)}: {text}")


def header_findings(raw: bytes, header: CowHeader, profile: Profile | None) -> list[Finding]:
    """What is wrong or risky in `header` (parsed from `raw`, the file's first bytes)."""
    found: list[Finding] = []
    refuses = _refusing_profiles(lambda p: header.version in p.format.readable_versions)
    f = _by_profile(profile, refuses, "header.version_unreadable", (
        f"cannot read a V{header.version} header (read_cow_header - invalid COW version): with a "
        "backing file on the command line the open fails; named alone, the file is used as a raw "
        "disk and the guest's first write destroys the header"))
    if f:
        found.append(f)
    if header.layout is V3_BROKEN:
        found.append(Finding("header.broken_v3_layout", WARNING, (
            "V3 header in the broken 64-bit layout (4 bytes of padding after mtime): Linux since "
            "2.6.15 and uml_moo recover it (`broken V3 file with 64-bit layout - recovering "
            "content`); 2.4 cannot read V3 at all")))
    found += _size_findings(header)
    path_field = dict((name, (start, end)) for name, start, end in header.layout.field_spans())
    start, end = path_field["backing_file"]
    if len(raw) >= end and b"\0" not in raw[start:end]:
        found.append(Finding("header.path_unterminated", CORRUPTION, (
            f"the backing path field ({end - start} bytes) has no NUL: read_cow_header() copies "
            "the path with cow_strdup(), which reads on past the field, so the kernel looks for "
            "a backing file whose name ends in header bytes"), byte_ranges=[(start, end - start)]))
    if header.cow_format != 0:
        found.append(Finding("header.cow_format", WARNING, (
            f"cow_format is {header.cow_format}; only 0 (bitmap) exists and the kernel never "
            "checks it")))
    return found


def _size_findings(header: CowHeader) -> list[Finding]:
    found: list[Finding] = []
    ss, align = header.sectorsize, header.alignment
    if ss <= 0 or ss & (ss - 1):
        found.append(Finding("header.sectorsize_invalid", CORRUPTION, (
            f"sector size {ss}: cow_sizes() divides by it, so no bitmap or data offset can be "
            "computed (uml_moo crashes; no kernel can use the file)")))
    elif ss != KERNEL_SECTOR:
        found.append(Finding("header.sectorsize_not_512", CORRUPTION, (
            f"sector size {ss}: cow_sizes() sizes the bitmap with it, but the 6.1 driver's I/O "
            "path counts 512-byte sectors (ubd_kern.c: io_req->sectorsize = SECTOR_SIZE), so "
            "bits and data are looked up at the wrong scale; every writer uses 512")))
    if header.layout not in (V1, V2):
        if align == 0:
            found.append(Finding("header.alignment_zero", CORRUPTION, (
                "alignment 0: read_cow_header() only warns (`invalid COW header, align == 0`), "
                "then cow_sizes() divides by zero; uml_moo dies of SIGFPE")))
        elif align % KERNEL_SECTOR:
            found.append(Finding("header.alignment_unaligned", WARNING, (
                f"alignment {align} is not a multiple of 512: the bitmap and data area start "
                "off sector boundaries (O_DIRECT access to the file fails on the host)")))
    if header.size == 0:
        found.append(Finding("header.size_zero", WARNING, (
            "size 0: Linux 6.1 refuses the open (`Failed to vmalloc COW bitmap`, a 0-byte "
            "bitmap); there is no sector to hold")))
    return found


def rounding_bug_findings(header: CowHeader, sectors: int, bitmap_len: int,
                          slack_bits: int, slack_range: tuple[int, int]) -> list[Finding]:
    """The V1/V2 rounding bug, and the data the 2.4 word write-back stranded in its slack."""
    uncovered = sectors - bitmap_len * 8
    found = [Finding("header.rounding_bug", WARNING, (
        f"V{header.version} rounding bug: cow_sizes() gives {bitmap_len} bitmap bytes for "
        f"{sectors} sectors, so the last {uncovered} have no bit; a kernel writing them "
        "stores their data in the COW file and their bits after the bitmap, where no reader "
        "looks; they always read from the backing file"),
        sectors=[(bitmap_len * 8, uncovered)])]
    if slack_bits:
        found.append(Finding("bitmap.bits_after_bitmap", LEAK, (
            f"{slack_bits} bits are set between the bitmap's end and the data area: the 2.4 "
            "bitmap write-back of sectors without a bit (rounding bug); their data is in the "
            "COW file, but no reader will see it"), byte_ranges=[slack_range]))
    return found


__all__ = ["header_findings", "rounding_bug_findings", "KERNEL_SECTOR"]
