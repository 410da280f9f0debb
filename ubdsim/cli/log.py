"""Show a lab log: what was recorded, in numbers, then every event.

    ubdsim log show [--json] [--summary] LOG

LOG is a file written by `ubdsim run --record LOG` (or serve/vm --record; the format is in
docs/lab-log-format.md). The summary names the kernel profile and options, each file the
run touched (its identity when recording started, how many host writes it got, its sha256
at the end), the guest requests by kind, the host writes by kind, what made writes durable
(under 6.1 without flag s: nothing), and the marks. The events follow, one line per guest
request as `--trace` prints them (`#N` numbers the host writes, which `ubdsim replay --upto
N` counts). --summary leaves the events out; --json prints one object {"summary", "events"}
with every record as it is in the log (payload bytes left out).
"""
from __future__ import annotations

import argparse
import json
import sys

from ..fileio import shown
from .status import OK

EPILOG = """exit codes:
  0    shown
  1    LOG is not a readable lab log (one line on stderr)
  2    usage error"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="show")
    show = sub.add_parser("show", help="summary and events of a log")
    show.add_argument("log", metavar="LOG")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument("--summary", action="store_true", help="leave the events out")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:
    from ..lab.logformat import public, read_log
    from ..lab.summary import as_json, summarize
    from ..lab.trace import TextRenderer

    with read_log(args.log) as log:
        summary = summarize(log)
        if args.json:
            out = {"summary": as_json(summary)}
            if not args.summary:
                out["events"] = [public(log.header)] + [public(r) for r in log.records]
            json.dump(out, sys.stdout, indent=1)
            print()
            return OK
        for line in _summary_lines(summary):
            print(line)
        if not args.summary:
            print("events:")
            renderer = TextRenderer(lambda line: print("  " + line))
            renderer(log.header)
            for record in log.records:
                renderer(record)
            renderer.close()
    return OK


def _summary_lines(s) -> list[str]:
    state = "complete" if s.complete else f"INCOMPLETE ({s.problem or 'no end record'})"
    lines = [f"log {shown(s.path)}: lab log v{s.version}, {s.tool or '?'}, kernel "
             f"{s.kernel or '?'}, {s.created or '?'}, {s.records} records, {state}"]
    if s.words:
        lines.append("kernel options: " + " ".join(s.words))
    lines.append("files:")
    for f in s.files:
        start = (f"{f.size} bytes, sha256 {(f.sha256 or 'not hashed')[:16]}"
                 + (", snapshot in the log" if f.snapshot else "")) if f.exists else "absent"
        line = f"  f{f.fid} {shown(f.given)} ({', '.join(f.roles) or 'seen later'}): at start {start}"
        if f.writes:
            line += f"; {f.writes} host writes ({_size(f.bytes_written)} of pwrite data)"
            if f.final_sha256 is not None:
                line += f"; at the end {f.final_size} bytes, sha256 {f.final_sha256[:16]}"
        else:
            line += "; never written"
        lines.append(line)
    if s.requests:
        lines.append("guest requests: " + ", ".join(
            f"{op} {v['count']}" + (f" ({v['sectors']} sectors)" if v["sectors"] else "")
            for op, v in sorted(s.requests.items())))
    lines.append(f"host writes: {s.host_writes}"
                 + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(s.host_write_kinds.items()))
                    + ")" if s.host_write_kinds else ""))
    lines.append(f"durability: {s.durability}")
    if s.marks:
        lines.append("marks: " + ", ".join(f"{n} after #{a}" for n, a in s.marks))
    return lines
