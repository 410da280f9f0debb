"""Comparing two outcomes of one scenario, with differences told in the COW format's terms.

Messages and guest transcripts are shown as unified diffs. For a file, the first differing
byte is named: which header field (from ubdsim.cow.layouts field_spans()), which bitmap byte
and which sectors' bits, or which data sector, read from the expected side's own header.
The sector patterns name themselves, so the bytes shown usually say what was written where.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import numpy as np

from ubdsim.cow.header import read_header
from ubdsim.cow.layouts import HEADER_READ_SIZE
from ubdsim.errors import UbdError

from .observe import FileImage

SECTOR = 512


@dataclass
class Outcome:
    """Everything observable after a scenario ran on one backend (normalised)."""

    source: str                                  # "linux.uml", "ubdsim", "golden"
    boots: list[dict]                            # {"log": [...], "out": [...], "status": n}
    files: dict[str, FileImage]
    problems: list[str] = field(default_factory=list)
    # (boot, step) -> the bytes a guest read step returned (live runs only, not in goldens)
    reads: dict[tuple[int, int], bytes] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"boots": self.boots, "files": {n: f.to_json() for n, f in self.files.items()}}

    @classmethod
    def from_json(cls, source: str, data: dict) -> "Outcome":
        return cls(source=source, boots=data["boots"],
                   files={n: FileImage.from_json(f) for n, f in data["files"].items()})


def compare(expected: Outcome, actual: Outcome) -> list[str]:
    """Readable differences (empty when the outcomes agree); `expected` is the oracle side."""
    a, b = expected.source, actual.source
    diffs: list[str] = [f"{actual.source} could not run: {p}" for p in actual.problems]
    diffs += [f"{expected.source} could not run: {p}" for p in expected.problems]
    if len(expected.boots) != len(actual.boots):
        diffs.append(f"boots: {a} {len(expected.boots)}, {b} {len(actual.boots)}")
    for n, (eb, ab) in enumerate(zip(expected.boots, actual.boots), 1):
        for key, what in (("log", "ubd log lines"), ("out", "guest output")):
            if eb[key] != ab[key]:
                body = difflib.unified_diff(eb[key], ab[key], f"{a} boot {n} {what}",
                                            f"{b} boot {n} {what}", lineterm="", n=2)
                diffs.append("\n".join(body))
        diffs += _explain_reads(n, eb["out"], ab["out"], expected, actual)
        if eb["status"] != ab["status"]:
            diffs.append(f"boot {n} guest exit status: {a} {eb['status']}, {b} {ab['status']}")
    for name in sorted(set(expected.files) | set(actual.files)):
        if name not in actual.files:
            diffs.append(f"file {name}: left by {a}, missing after {b}")
        elif name not in expected.files:
            diffs.append(f"file {name}: left by {b}, not by {a}")
        else:
            diffs += compare_file(name, expected.files[name], actual.files[name], a, b)
    return diffs


def compare_file(name: str, exp: FileImage, act: FileImage, a: str, b: str) -> list[str]:
    out = []
    if exp.size != act.size:
        out.append(f"file {name}: length {a} {exp.size}, {b} {act.size}")
    ec, ac = exp.content(), act.content()
    if ec != ac:
        out.append(describe_first_difference(name, ec, ac, a, b))
    elif exp.extents != act.extents:
        out.append(f"file {name}: same bytes, different holes (allocated extents "
                   f"offset+length)\n  {a}: {_extents(exp.extents)}\n  {b}: {_extents(act.extents)}")
    return out


def _extents(extents: list[tuple[int, int]], limit: int = 12) -> str:
    text = ", ".join(f"{off}+{length}" for off, length in extents[:limit])
    return text + (f", ... ({len(extents)} in all)" if len(extents) > limit else "")


def describe_first_difference(name: str, exp: bytes, act: bytes, a: str, b: str) -> str:
    common = min(len(exp), len(act))
    differ = np.frombuffer(exp, np.uint8, common) != np.frombuffer(act, np.uint8, common)
    first = int(np.argmax(differ)) if differ.any() else common
    count = int(differ.sum()) + abs(len(exp) - len(act))
    lines = [f"file {name}: {count} byte(s) differ; first at offset {first} "
             f"({meaning(exp if first < len(exp) else act, first, exp, act)})"]
    lo = first - first % 16
    lines.append(f"  {a:>9} @{lo}: {exp[lo:lo + 16].hex(' ')}  {_text(exp[lo:lo + 16])}")
    lines.append(f"  {b:>9} @{lo}: {act[lo:lo + 16].hex(' ')}  {_text(act[lo:lo + 16])}")
    return "\n".join(lines)


def _text(data: bytes) -> str:
    return "".join(chr(c) if 32 <= c < 127 else "." for c in data)


def meaning(reference: bytes, offset: int, exp: bytes, act: bytes) -> str:
    """What byte `offset` is, read from `reference`'s COW header (raw sectors otherwise)."""
    try:
        header = read_header(reference[:HEADER_READ_SIZE])
        geo = header.geometry()
    except (UbdError, ZeroDivisionError, ValueError):
        return _raw_sector(offset, exp, act)
    layout = header.layout
    for field_name, start, end in layout.field_spans():
        if start <= offset < end:
            return (f"{layout.name} header field '{field_name}' bytes {start}-{end - 1}, "
                    f"byte {offset - start} of it")
    if offset < layout.size:
        return f"{layout.name} header padding"
    if geo.bitmap_offset <= offset < geo.bitmap_offset + geo.bitmap_len:
        index = offset - geo.bitmap_offset
        e = exp[offset] if offset < len(exp) else 0
        x = act[offset] if offset < len(act) else 0
        changed = [index * 8 + bit for bit in range(8) if (e ^ x) >> bit & 1]
        states = ", ".join(f"sector {s}: {'set' if e >> (s % 8) & 1 else 'clear'} vs "
                           f"{'set' if x >> (s % 8) & 1 else 'clear'}" for s in changed)
        return f"bitmap byte {index} (sectors {index * 8}-{index * 8 + 7}); {states}"
    if offset < geo.data_offset:
        where = "after the bitmap" if offset >= geo.bitmap_offset else "before the bitmap"
        return f"gap {where} (bitmap {geo.bitmap_offset}+{geo.bitmap_len}, data at {geo.data_offset})"
    sector, within = divmod(offset - geo.data_offset, header.sectorsize)
    return f"data area: disk sector {sector}, byte {within}{_sector_text(geo.data_offset + sector * header.sectorsize, exp, act)}"


def _raw_sector(offset: int, exp: bytes, act: bytes) -> str:
    sector, within = divmod(offset, SECTOR)
    return f"raw sector {sector}, byte {within}{_sector_text(sector * SECTOR, exp, act)}"


def _sector_text(start: int, exp: bytes, act: bytes) -> str:
    """The first line of a sector on each side: patterns name their tag and sector."""
    def first_line(data: bytes) -> str:
        chunk = data[start:start + SECTOR]
        if not chunk.strip(b"\0"):
            return "zeros" if chunk else "past the end"
        return repr(_text(chunk.split(b"\n", 1)[0][:40]))
    return f"; sector holds {first_line(exp)} vs {first_line(act)}"


def _explain_reads(boot: int, exp_out: list[str], act_out: list[str], expected: Outcome,
                   actual: Outcome) -> list[str]:
    """For each read step whose checksum differs, the first differing sector and its text."""
    notes = []
    for e_line, a_line in zip(exp_out, act_out):
        if e_line == a_line or " read" not in e_line or "sha256=" not in e_line:
            continue
        step = int(e_line.split()[0])
        e_data, a_data = expected.reads.get((boot, step)), actual.reads.get((boot, step))
        if e_data is None or a_data is None:
            continue
        first_sector = int(e_line.split()[3].split("+")[0]) if e_line.split()[1] == "read" else 0
        common = min(len(e_data), len(a_data))
        differ = np.frombuffer(e_data, np.uint8, common) != np.frombuffer(a_data, np.uint8, common)
        if not differ.any():
            notes.append(f"boot {boot} step {step}: same first {common} bytes, lengths "
                         f"{len(e_data)} vs {len(a_data)}")
            continue
        at = int(np.argmax(differ))
        sectors = np.unique(np.nonzero(differ)[0] // SECTOR)
        where = first_sector + at // SECTOR
        notes.append(f"boot {boot} step {step} read: {len(sectors)} sector(s) differ, first at "
                     f"device sector {where} byte {at % SECTOR}; sector holds "
                     f"{_line_at(e_data, at)} ({expected.source}) vs {_line_at(a_data, at)} "
                     f"({actual.source})")
    return notes


def _line_at(data: bytes, at: int) -> str:
    chunk = data[at - at % SECTOR:at - at % SECTOR + SECTOR]
    if not chunk.strip(b"\0"):
        return "zeros"
    return repr(_text(chunk.split(b"\n", 1)[0][:40]))
