"""Rendering operation results for people (aligned text) and for programs (`--json`).

JSON output is the dataclass as a dict, keys stable, one object on stdout; human output says
what a value means next to the value.
"""
from __future__ import annotations

import json
import time

from ..fileio import shown
from ..ops.inspect import ChainInfo, CowSummaryReport, InfoReport
from ..ops.merge import MergeResult


def to_json(obj: object) -> str:
    data = obj.as_dict() if hasattr(obj, "as_dict") else obj
    return json.dumps(data, indent=2, sort_keys=False)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def info_text(report: InfoReport) -> str:
    lines = [f"{shown(report.path)}: COW file version {report.version} ({report.layout} layout)", "",
             "header fields:"]
    for f in report.fields:
        value = f"0x{f.value:08x}" if f.name == "magic" else f.value
        if f.name == "mtime":
            value = f"{f.value} ({_utc(f.value)})"
        elif f.name == "backing_file":
            value = f'"{shown(f.value)}"'
        lines.append(f"  {f.name:<13} @{f.offset:<5} [{f.length:>4} B]  {value}")
    for note in report.kernel_notes:
        lines.append(f"  kernel says: {note}")
    lines += ["", "layout:"]
    if report.bitmap_offset is None:
        lines.append("  unavailable: the header's alignment or sector size places nothing")
    else:
        pct = 100.0 * report.sectors_marked / report.sectors if report.sectors else 0.0
        lines += [f"  bitmap        offset {report.bitmap_offset}, {report.bitmap_len} bytes",
                  f"  data          offset {report.data_offset} (sector s at data offset + s * sectorsize)",
                  f"  sectors       {report.sectors}",
                  f"  marked        {report.sectors_marked} ({pct:.2f}%) sectors live in the COW file",
                  f"  full length   {report.expected_length} bytes"]
    lines += [f"  on disk       {report.apparent_bytes} bytes apparent, {report.allocated_bytes} "
              f"allocated ({human_bytes(report.apparent_bytes)} vs {human_bytes(report.allocated_bytes)})",
              "", "backing file:", f'  path          "{shown(report.backing.path)}"']
    b = report.backing
    if not b.present:
        lines.append(f"  present       no ({b.error})")
    elif b.error:
        lines.append(f"  present       yes, but unusable: {b.error}")
    else:
        lines += ["  present       yes",
                  f"  size match    {'yes' if b.size_match else 'NO'} (file {b.size}"
                  f"{'; grown by the 2.4 resize patch, see hazards' if b.grown else ''})",
                  f"  mtime match   {'yes' if b.mtime_match else 'NO'} (file {b.mtime})"]
    lines += ["", "hazards:"]
    lines += [f"  {h.id}: {h.text}" for h in report.hazards] or ["  none"]
    return "\n".join(lines)


def _match(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "NO")


def chain_info_text(info: ChainInfo) -> str:
    """`info --chain`: the chain's layers and links, then each COW layer's own report."""
    layers = info.chain.get("layers", [])
    lines = [f"{shown(info.path)}: backing chain of {len(layers)} layers, top first "
             "(ubdsim's --chain; the kernel reads a backing file raw)"]
    width = max((len(shown(layer["path"])) for layer in layers), default=0)
    for i, layer in enumerate(layers):
        if not layer["exists"]:
            what = f"missing ({layer['error']})"
        elif layer["error"]:
            what = f"unusable ({layer['error']})"
        elif layer["is_cow"]:
            what = f"COW file version {layer['header']['version']}"
        elif layer["header_error"]:
            what = f"COW magic, unreadable header ({layer['header_error']})"
        else:
            what = f"raw, {layer['size']} bytes"
        line = f"  layer {i:<3} {shown(layer['path']):<{width}}  {what}"
        if i > 0 and layer["exists"] and not layer["error"]:
            line += (f"; size match {_match(layer['size_match'])}, "
                     f"mtime match {_match(layer['mtime_match'])}")
        lines.append(line)
    lines.append(f"  problem   {info.problem}" if info.problem else "  problem   none: every link matches")
    for i, report in enumerate(info.layers):
        lines += ["", f"=== layer {i} ===", info_text(report)]
    return "\n".join(lines)


SUMMARY_NAMED = 10               # COW files named in a group's moo -d line (--json: all)


def summary_text(report: CowSummaryReport) -> str:
    """`info --summary`: one block per backing file, one line per COW file."""
    lines: list[str] = []
    for group in report.groups:
        n = len(group.cows)
        head = f"backing file {shown(group.backing)}"
        if not group.present:
            head += f" (missing: {group.error})"
        elif group.error:
            head += f" (unusable: {group.error})"
        else:
            head += (f" (device {group.dev}, inode {group.ino}; {group.size} bytes, "
                     f"{human_bytes(group.allocated_bytes)} allocated)")
        lines.append(f"{head}: {n} COW file{'s' if n != 1 else ''}")
        others = [name for name in group.names if name != group.backing]
        if others:
            lines.append("  also named " + ", ".join(f'"{shown(name)}"' for name in others))
        width = max(len(shown(c.path)) for c in group.cows)
        lines.append(f"  {'COW file':<{width}}  {'ver':>3}  {'size':>10}  {'marked':>10}  "
                     f"{'apparent':>10}  {'allocated':>10}  matches")
        for c in group.cows:
            marked = "?" if c.sectors_marked is None else str(c.sectors_marked)
            match = "yes" if c.size_match and c.mtime_match else (
                "?" if c.mtime_match is None else
                f"NO ({'mtime' if not c.mtime_match else 'size'} differs)")
            lines.append(f"  {shown(c.path):<{width}}  {c.version:>3}  {human_bytes(c.size):>10}  "
                         f"{marked:>10}  {human_bytes(c.apparent_bytes):>10}  "
                         f"{human_bytes(c.allocated_bytes):>10}  {match}")
        lines.append(f"  in all: {human_bytes(group.cow_apparent_bytes)} apparent, "
                     f"{human_bytes(group.cow_allocated_bytes)} allocated")
        if not group.present or group.error:
            lines.append("  moo -d: not possible (no backing file to merge into)")
        elif group.at_risk:
            k = len(group.at_risk)
            few = ", ".join(shown(p) for p in group.at_risk[:SUMMARY_NAMED])
            if k > SUMMARY_NAMED:
                few += f" and {k - SUMMARY_NAMED} more (all of them in --json)"
            lines.append(f"  moo -d of any one of these {k} invalidates the other {k - 1}: {few}")
        else:
            lines.append("  moo -d: invalidates no other COW file listed here")
        lines.append("")
    nb = len(report.groups)
    lines.append(f"{report.cows} COW file{'s' if report.cows != 1 else ''} over {nb} backing "
                 f"file{'s' if nb != 1 else ''}: {human_bytes(report.apparent_bytes)} apparent, "
                 f"{human_bytes(report.allocated_bytes)} allocated ({report.apparent_bytes} and "
                 f"{report.allocated_bytes} bytes)")
    return "\n".join(lines)


def merge_text(result: MergeResult) -> str:
    where = (f"into the backing file {shown(result.output)}" if result.in_place
             else f"into {shown(result.output)}")
    resumed = " (resumed an interrupted merge)" if result.resumed else ""
    if result.chain:
        if result.in_place and len(result.chain) > 2:
            where = f"into the COW layer below it, {shown(result.output)}"
        resumed += " (chain: " + " -> ".join(shown(p) for p in result.chain) + ")"
    if result.size > result.backing_size:
        resumed += (f" (COW file grown by the 2.4 resize patch: {result.backing_size} -> "
                    f"{result.size} bytes)")
    cows = "COW layers" if result.chain and not result.in_place else "COW file"
    broke = ""
    if result.invalidated:
        n = len(result.invalidated)
        broke = f"; {n} other COW file{'s' if n != 1 else ''} over it invalidated"
    return (f"merged {shown(result.cow)} {where}{resumed}: {result.sectors_from_cow} sectors from the "
            f"{cows}, {result.sectors_from_backing} from {shown(result.backing)}; "
            f"{result.bytes_written} bytes written in {result.seconds:.2f} s{broke}")


# -- map, compare, convert (qemu-img's conventions) ------------------------------------------
# Types only: importing these operations here would make `info` and `moo` load them too,
# and a broken module of one command must not break the others (see cli/__init__.py).
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from ..ops.compare import CompareResult
    from ..ops.convert import ConvertResult
    from ..ops.map import MapReport


def _c_hex(n: int) -> str:
    """C's printf("%#x"): qemu-img prints 0 as "0", not "0x0"."""
    return f"{n:#x}" if n else "0"


def map_text(report: MapReport) -> str:
    """qemu-img map's human format: only runs holding data, as `Offset Length Mapped to File`.

    Known-zero runs (holes, qcow2 zero clusters, the grown tail) are left out, as qemu-img
    leaves them out; adjacent printed runs of one file with contiguous offsets are one line.
    """
    lines = [f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File"]
    shown_runs: list[list] = []
    for e in report.entries:
        if not e.data or e.zero:
            continue
        last = shown_runs[-1] if shown_runs else None
        if last and last[0] + last[1] == e.start and last[3] == e.file and last[2] + last[1] == e.offset:
            last[1] += e.length
        else:
            shown_runs.append([e.start, e.length, e.offset, e.file])
    for start, length, offset, file in shown_runs:
        lines.append(f"{_c_hex(start):<16}{_c_hex(length):<16}{_c_hex(offset):<16}{shown(file)}")
    return "\n".join(lines)


def compare_lines(result: CompareResult) -> list[str]:
    """What qemu-img compare prints for the same outcome, line for line."""
    common = min(result.size_a, result.size_b)
    if result.reason == "size":
        return ["Strict mode: Image size mismatch!"]
    if result.reason == "block_status":
        return [f"Strict mode: Offset {result.offset} block status mismatch!"]
    warning = ["Warning: Image size mismatch!"] if result.size_mismatch else []
    if result.reason == "content":
        in_extra = result.first_differing_byte is not None and result.first_differing_byte >= common
        return (warning if in_extra else []) + [f"Content mismatch at offset {result.offset}!"]
    return warning + ["Images are identical."]


def convert_text(result: ConvertResult) -> str:
    what = {"cow": "COW file", "raw": "raw image", "qcow2": "qcow2 image"}
    over = f" over {shown(result.backing_name)}" if result.backing_name else ""
    lines = [f"converted {shown(result.source)} ({what[result.source_format]}) to "
             f"{shown(result.output)} ({what[result.output_format]}{over}): {result.ranges} "
             f"ranges, {result.bytes_copied} data bytes, {result.bytes_zeroed} bytes as zeros, "
             f"in {result.seconds:.2f} s"]
    lines += ["  ran: " + " ".join(shown(word) for word in argv) for argv in result.commands]
    return "\n".join(lines)
