#!/usr/bin/env python3
"""Benchmark `ubdsim run` against the real kernel (linux.uml 6.1) and native I/O.

The same dd workloads run (1) inside linux.uml on ubd0 over a fresh COW file, (2) under
`ubdsim run --kernel 6.1` over a fresh COW file of the same kind, and (3) with plain dd on a
host file (the ceiling). Workloads: 4 KiB O_DIRECT sequential write and read, 1 MiB O_DIRECT
sequential write and read, and a buffered sequential read of a range only the backing file
holds, in 128 KiB reads as cat makes them (the host's is a dd of the backing file's same
range: the file was just written, so the host serves it from its page cache, as it does
ubdsim's reads of it). It also measures the cost of one ptrace stop (an intercepted call
that is passed through, and one that is emulated on a device descriptor), and the ceiling of
the buffered read under any tracer that stops once per read(): the same dd of the backing
file itself under `ubdsim run`, where every read is a stop passed through at once.

It also times an empty linux.uml boot (median of 5) and says whether the XSAVE fix is
preloaded (kernel_ref/xstate.py): run it with UBDSIM_XSTATE_FIX=on and =off on a host where
both boot to see what the fix costs.

One run each: the machine is shared, so numbers are noisy; compare ratios, not absolutes.

    .venv/bin/python scripts/bench_guest.py [--small-mib 32] [--big-mib 256] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kernel_ref import launcher

WORKLOADS = [  # name, dd arguments (DEV is replaced), bytes moved computed from bs*count
    ("4k-direct-write", "if=/dev/zero of=DEV bs=4k count={small4k} oflag=direct conv=notrunc"),
    ("4k-direct-read", "if=DEV of=/dev/null bs=4k count={small4k} iflag=direct"),
    ("1m-direct-write", "if=/dev/zero of=DEV bs=1M count={bigm} oflag=direct conv=notrunc"),
    ("1m-direct-read", "if=DEV of=/dev/null bs=1M count={bigm} iflag=direct"),
    ("backing-buffered-read", "if=BACK of=/dev/null bs=128k skip={skip} count={count}"),
]
COPIED = re.compile(r"^(\d+) bytes .* copied, ([0-9.]+) s", re.M)
ROOT = Path(__file__).resolve().parent.parent
UBDSIM = [str(ROOT / ".venv/bin/python"), "-m", "ubdsim"]


def dd_lines(dev: str, small4k: int, bigm: int, back: str | None = None) -> list[str]:
    """The workloads on `dev`; the backing-only read reads `back` (default `dev`) past the
    range the writes touched (the device is twice as large as the larger of them)."""
    span = max(small4k // 256, bigm)           # MiB the writes may have touched
    return [f"dd {args.format(small4k=small4k, bigm=bigm, skip=span * 8, count=span * 8)}"
            .replace('DEV', dev).replace('BACK', back or dev) for _, args in WORKLOADS]


def parse_rates(text: str) -> list[float]:
    """MB/s (10^6 bytes per second, like dd) of each dd run, in order."""
    return [int(b) / float(s) / 1e6 for b, s in COPIED.findall(text)]


def run_uml(work: Path, script: str) -> list[float]:
    (work / "body.sh").write_text(script)
    run = launcher.boot(["ubd0=uml.cow,backing.img"], ["sh", "body.sh"], cwd=work, mem="256M",
                        merge_stderr=True, timeout=1800)
    return parse_rates(run.output)


def uml_boot_seconds(work: Path, boots: int = 5) -> float:
    """Median time of a boot that runs `true`: the kernel's start-up and power-off."""
    return statistics.median(launcher.boot([], ["true"], cwd=work).seconds for _ in range(boots))


def run_ubdsim(work: Path, script: str) -> list[float]:
    (work / "body.sh").write_text(script)
    proc = subprocess.run([*UBDSIM, "run", "--kernel", "6.1", "ubd0=sim.cow,backing.img", "--",
                           "sh", "body.sh"], cwd=work, capture_output=True, text=True,
                          timeout=1800)
    return parse_rates(proc.stderr)


def run_native(work: Path, script: str) -> list[float]:
    (work / "body.sh").write_text(script)
    proc = subprocess.run(["sh", "body.sh"], cwd=work, capture_output=True, text=True)
    return parse_rates(proc.stderr)


STOP_PROBE = """import os, sys, time
n = 100000
fd = os.open(sys.argv[1], os.O_RDONLY)
t = time.perf_counter()
for _ in range(n):
    os.lseek(fd, 0, 0)
print((time.perf_counter() - t) / n * 1e6)
"""


def stop_cost(work: Path) -> tuple[float, float, float]:
    """(native lseek us, passthrough stop us, emulated stop us) per call."""
    probe = work / "stop_probe.py"
    probe.write_text(STOP_PROBE)
    py = sys.executable
    native = float(subprocess.run([py, str(probe), "/dev/null"], capture_output=True,
                                  text=True).stdout)
    out = subprocess.run([*UBDSIM, "run", "--kernel", "6.1", "ubd0=sim.cow,backing.img", "--",
                          "sh", "-c", f"{py} {probe} /dev/null; {py} {probe} /dev/ubda"],
                         cwd=work, capture_output=True, text=True).stdout.split()
    return native, float(out[0]), float(out[1])


def passthrough_read(work: Path, small4k: int, bigm: int) -> float:
    """MB/s of the backing-only dd (the last workload) on the backing file itself under
    `ubdsim run`: one stop per read() and nothing done in it."""
    rates = run_ubdsim(work, dd_lines("backing.img", small4k, bigm)[-1] + "\n")
    return rates[0] if rates else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-mib", type=int, default=32, help="MiB moved by the 4 KiB runs")
    ap.add_argument("--big-mib", type=int, default=256, help="MiB moved by the 1 MiB runs")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON rows")
    args = ap.parse_args()
    try:
        fix = launcher.require_kernel()
    except launcher.KernelUnavailable as err:
        print(f"bench_guest: {err}", file=sys.stderr)
        return 1
    work = Path(args.keep or tempfile.mkdtemp(prefix="ubdsim-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = max(args.small_mib, args.big_mib) * 2 << 20
    with open(work / "backing.img", "wb") as f:   # first half a hole, second half data
        f.truncate(size // 2)
        f.seek(size // 2)
        chunk = bytes(range(256)) * 4096
        for _ in range(size // 2 >> 20):
            f.write(chunk)
    with open(work / "native.img", "wb") as f:     # allocated, like a written COW data area
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            f.write(chunk)
    small4k, bigm = args.small_mib * 256, args.big_mib
    load_before = os.getloadavg()
    try:
        started = time.time()
        boot_seconds = uml_boot_seconds(work)
        uml = run_uml(work, "\n".join(dd_lines("/dev/ubda", small4k, bigm)) + "\n")
        sim = run_ubdsim(work, "\n".join(dd_lines("/dev/ubda", small4k, bigm)) + "\n")
        native = run_native(work, "\n".join(dd_lines("native.img", small4k, bigm,
                                                     "backing.img")) + "\n")
        native_call, passthrough, emulated = stop_cost(work)
        ceiling = passthrough_read(work, small4k, bigm)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        return json_rows(uml, sim, native, native_call, passthrough, emulated, ceiling)
    print(f"linux.uml: {fix.describe()}; empty boot {boot_seconds:.2f} s (median of 5)")
    print(f"{'workload':18} {'linux.uml':>10} {'ubdsim':>10} {'native':>10} {'ubdsim/uml':>11}")
    for (name, _), u, s, n in zip(WORKLOADS, uml, sim, native):
        print(f"{name:18} {u:10.1f} {s:10.1f} {n:10.1f} {s / u:10.2f}x")
    print(f"{'  (host file, traced)':18} {'':>10} {ceiling:10.1f} {native[-1]:10.1f}   the "
          "ceiling of one stop per read()")
    print("(MB/s, one run each on a shared machine: noisy)")
    print(f"per call: native lseek {native_call:.2f} us; under ubdsim, passed-through stop "
          f"{passthrough:.2f} us, emulated stop {emulated:.2f} us")
    print(f"total {time.time() - started:.0f} s; load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0 if len(uml) == len(sim) == len(native) == len(WORKLOADS) else 1


def json_rows(uml: list[float], sim: list[float], native: list[float], native_call: float,
              passthrough: float, emulated: float, ceiling: float) -> int:
    """--json (scripts/bench_table.py): the figures above as bench_rows rows."""
    from bench_rows import print_rows, row
    rows = []
    for (name, _), u, s, n in zip(WORKLOADS, uml, sim, native):
        rows.append(row(f"guest {name}", "MB/s", round(s, 1), round(u, 1), "linux.uml", "higher"))
        rows.append(row(f"guest {name}", "MB/s", round(s, 1), round(n, 1), "plain host dd",
                        "higher"))
    rows.append(row("guest buffered read of a host file, traced", "MB/s", round(ceiling, 1),
                    round(native[-1], 1) if native else None, "plain host dd", "higher"))
    rows.append(row("ptrace stop, passed through", "us", round(passthrough, 2),
                    round(native_call, 2), "plain host lseek", "lower"))
    rows.append(row("ptrace stop, emulated", "us", round(emulated, 2), round(native_call, 2),
                    "plain host lseek", "lower"))
    print_rows(rows)
    return 0 if len(uml) == len(sim) == len(native) == len(WORKLOADS) else 1


if __name__ == "__main__":
    sys.exit(main())
