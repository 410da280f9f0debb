#!/usr/bin/env python3
"""`make bench`: every benchmark in one table, ubdsim's figure beside its anchor's, and JSON.

    .venv/bin/python scripts/bench_table.py [--repeat N] [--only NAME[,NAME]] [--out DIR]

Runs each scripts/bench_NAME.py (moo, large, guest, nbd, crash) with --json, N times
(default 1), and prints one table: per figure ubdsim's value and the anchor's (linux.uml,
uml_moo, qemu-nbd, plain host I/O, or the issue's goal), and the ratio ours / anchor, with
`better` saying which way wins; with N > 1, the min/median/max of the ratio (the values are
medians). Above it: the host's CPU line, linux.uml's XSAVE line and the load average before
and after. Everything is also written to DIR/bench-YYYYmmdd-HHMMSS.json (default
bench-results/, which git ignores) so runs can be compared over time. A bench that fails is
named on stderr and the exit status is 1; the others still run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench_rows import cpu_line, load_line  # noqa: E402

BENCHES = ["moo", "large", "guest", "nbd", "crash"]


def xsave_line() -> str:
    from kernel_ref import launcher
    try:
        return f"linux.uml: {launcher.require_kernel().describe()}"
    except launcher.KernelUnavailable as err:
        return f"linux.uml: cannot run here: {err}"


def run_bench(name: str) -> list[dict] | str:
    """The rows of one run of scripts/bench_NAME.py --json, or why there are none."""
    done = subprocess.run([sys.executable, os.path.join(HERE, f"bench_{name}.py"), "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"exit {done.returncode}: {last}"
    return json.loads(lines[-1])


def summarize(name: str, runs: list[list[dict]]) -> list[dict]:
    """One row per figure and anchor: median values, the ratio's min/median/max over the runs."""
    out = []
    for key in dict.fromkeys((r["figure"], r["anchor_name"]) for rows in runs for r in rows):
        same = [r for rows in runs for r in rows if (r["figure"], r["anchor_name"]) == key]
        ratios = [r["ratio"] for r in same if r["ratio"] is not None]
        anchors = [r["anchor"] for r in same if r["anchor"] is not None]
        out.append({**same[0], "bench": name, "runs": len(same),
                    "ours": statistics.median(r["ours"] for r in same),
                    "anchor": statistics.median(anchors) if anchors else None,
                    "ratio": statistics.median(ratios) if ratios else None,
                    "ratio_min": min(ratios) if ratios else None,
                    "ratio_max": max(ratios) if ratios else None,
                    "ratios": ratios})
    return out


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def table(rows: list[dict], repeat: int) -> str:
    head = f"{'figure':44} {'unit':5} {'ubdsim':>9} {'anchor':>9} {'anchor is':18} "
    head += f"{'ratio':>6} {'min':>6} {'max':>6}  better" if repeat > 1 else f"{'ratio':>6}  better"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['figure'][:44]:44} {r['unit']:5} {number(r['ours']):>9} "
                f"{number(r['anchor']):>9} {r['anchor_name'][:18]:18} {number(r['ratio']):>6} ")
        if repeat > 1:
            line += f"{number(r['ratio_min']):>6} {number(r['ratio_max']):>6} "
        lines.append(line + f" {r['better']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each bench (default 1)")
    parser.add_argument("--only", default=",".join(BENCHES),
                        help=f"benches to run, comma-separated (default all: {','.join(BENCHES)})")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench-results"),
                        help="where the JSON goes (default bench-results/)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown or args.repeat < 1:
        print(f"bench_table: unknown bench {', '.join(unknown)} (known: {', '.join(BENCHES)})"
              if unknown else "bench_table: --repeat must be at least 1", file=sys.stderr)
        return 2
    started = time.strftime("%Y%m%d-%H%M%S")
    host = {"cpu": cpu_line(), "xsave": xsave_line(), "load_before": load_line()}
    rows: list[dict] = []
    failed: dict[str, str] = {}
    for name in names:
        runs = []
        for n in range(args.repeat):
            print(f"bench_table: {name} run {n + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            got = run_bench(name)
            if isinstance(got, str):
                failed[name] = got
                print(f"bench_table: {name} FAILED ({got})", file=sys.stderr)
                break
            runs.append(got)
        if runs:
            rows += summarize(name, runs)
    host["load_after"] = load_line()
    print(f"host: {host['cpu']}\n{host['xsave']}\n"
          f"load average (1/5/15 min): before {host['load_before']}, after {host['load_after']}")
    print(table(rows, args.repeat))
    print("ratio = ubdsim / anchor; `better` says which way wins"
          + (f"; values are medians of {args.repeat} runs" if args.repeat > 1 else ""))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"bench-{started}.json")
    with open(path, "w") as f:
        json.dump({"started": started, "repeat": args.repeat, "host": host, "rows": rows,
                   "failed": failed}, f, indent=2)
    print(f"written: {os.path.relpath(path, ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
