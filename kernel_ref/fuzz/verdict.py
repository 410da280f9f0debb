"""What kind of disagreement a fuzz program found, and which bytes a differing read returned.

Why categories: the fuzzer finds the same ubdsim gap through many programs, and the shrinker
must keep the disagreement it started with, not slip to another. A category names where the
two sides first differ in the comparison's own terms: an operation's result line (its name,
the I/O path of its descriptor, and whether the errno, the value or the data differs), the
ubd driver's log lines, the exit status, or a file (its role and which part: header, bitmap,
data, length, holes), as compare.compare() describes it.
"""
from __future__ import annotations

import re

import numpy as np

from ..compare import Outcome
from .program import Program

_LINE = re.compile(r"^(\d+)\.(\d+) (\S+) ")
_ROLES = {"c": "cow", "b": "backing", "r": "raw"}


def _result(line: str | None) -> str:
    return "" if line is None else line.rsplit(" = ", 1)[-1]


def _kind(e: str | None, a: str | None) -> str:
    if e is None or a is None:
        return "missing"
    er, ar = _result(e), _result(a)
    if er.startswith("err=") or ar.startswith("err=") or "no-fd" in (er, ar):
        return "errno"
    if "sha=" in er and "sha=" in ar and er.split()[0] == ar.split()[0]:
        return "data"
    return "value"


def _out_categories(program: Program, boot: int, e_out: list[str], a_out: list[str]) -> list[str]:
    def keyed(lines: list[str]) -> dict[str, str]:
        out = {}
        for line in lines:
            m = _LINE.match(line)
            out[f"{m.group(1)}.{m.group(2)}" if m else line.split(" ", 1)[0]] = line
        return out

    e, a = keyed(e_out), keyed(a_out)
    modes = program.resolved_with_modes(boot - 1) if boot - 1 < len(program.boots) else []
    found = []
    for key in list(e) + [k for k in a if k not in e]:
        if e.get(key) == a.get(key):
            continue
        if "." not in key:
            found.append("out:status-line")
            continue
        k = int(key.split(".")[1])
        op, mode = modes[k - 1] if k - 1 < len(modes) else ({"op": "?"}, "-")
        found.append(f"out:{op['op']}{_ioctl(op)}[{mode}]:{_kind(e.get(key), a.get(key))}")
    return found


def _ioctl(op: dict) -> str:
    return f"({op['name']})" if op["op"] == "ioctl" else ""


def _file_category(diff: str) -> str:
    head = diff.split("\n", 1)[0]
    name = head.split()[1].rstrip(":")
    role = _ROLES.get(name[:1], name)
    if ": length " in head:
        area = "length"
    elif "different holes" in head:
        area = "holes"
    elif "header" in head:
        area = "header"
    elif "bitmap" in head:
        area = "bitmap"
    elif "gap " in head:
        area = "gap"
    elif "data area" in head or "raw sector" in head:
        area = "data"
    elif "missing after" in head or "not by" in head:
        area = "existence"
    else:
        area = "other"
    return f"file:{role}:{area}"


def categories(program: Program, expected: Outcome, actual: Outcome, diffs: list[str]) -> list[str]:
    """The kinds of difference, in the order the comparison reports them (no repeats)."""
    found: list[str] = []
    found += [f"problem:{expected.source}" for _ in expected.problems]
    found += [f"problem:{actual.source}" for _ in actual.problems]
    if len(expected.boots) != len(actual.boots):
        found.append("boots")
    for n, (eb, ab) in enumerate(zip(expected.boots, actual.boots), 1):
        found += _out_categories(program, n, eb["out"], ab["out"])
        if eb["log"] != ab["log"]:
            found.append("log")
        if eb["status"] != ab["status"]:
            found.append("status")
    found += [_file_category(d) for d in diffs if d.startswith("file ")]
    found += ["runner" for d in diffs if d.startswith("guest runner failed")]
    if diffs and not found:
        found.append("other")
    return list(dict.fromkeys(found))


def explain_reads(expected: Outcome, actual: Outcome) -> list[str]:
    """For each read whose bytes differ: how many, where the first is, what each side has."""
    notes = []
    for key in sorted(set(expected.reads) & set(actual.reads)):
        e, a = expected.reads[key], actual.reads[key]
        if e == a:
            continue
        common = min(len(e), len(a))
        differ = np.frombuffer(e, np.uint8, common) != np.frombuffer(a, np.uint8, common)
        if not differ.any():
            notes.append(f"boot {key[0]} op {key[1]}: same first {common} bytes, lengths "
                         f"{len(e)} vs {len(a)}")
            continue
        at = int(np.argmax(differ))
        notes.append(f"boot {key[0]} op {key[1]}: {int(differ.sum())} byte(s) of the read differ, "
                     f"first at byte {at} of it: {_text(e, at)} ({expected.source}) vs "
                     f"{_text(a, at)} ({actual.source})")
    return notes


def _text(data: bytes, at: int) -> str:
    chunk = data[at - at % 32:at - at % 32 + 32]
    if not chunk.strip(b"\0"):
        return "zeros"
    return repr("".join(chr(c) if 32 <= c < 127 else "." for c in chunk))
