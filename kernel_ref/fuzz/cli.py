"""`python -m kernel_ref fuzz`: generate programs, judge them, shrink and report what disagrees.

Why a subcommand of kernel_ref and not a test: a fuzz run is open-ended (as long as the time
one has), needs the real kernel, and its product is a report and, when asked, scenarios; the
test suite runs a fixed, small batch of it (tests/kernel_ref/test_fuzz.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..backends import UmlBackend
from ..errors import KernelUnavailable
from . import save
from .batch import Pool
from .execute import Judgement, kernel_side, ubdsim_side
from .generator import FEATURES, OP_CLASSES, Config, generate, respects
from .guest_runner import describe
from .progress import Bar, Summary
from .shrink import Shrunk, shrink

DESCRIPTION = """Differential fuzzing of `ubdsim run --kernel 6.1` against the real linux.uml.

Program INDEX of seed SEED (named SEED:INDEX, made again from that name alone) sets up 1-3
units (COW files from uml_mkcow or built as V1/V2/V3/broken-V3 with pre-existing bits and
data, COW files the kernel creates, COW files named alone, raw files; backing sizes often not
a multiple of 4 KiB or 512; flags r s c t d) and runs 4-20 operations in the guest through a
Python runner: opens with O_DIRECT/O_SYNC/O_RDONLY..., pread/pwrite/read/write/readv/writev
at aligned and odd offsets, across the last sector and past the end, lseek, fsync,
fdatasync, sync, posix_fadvise, fallocate, BLKDISCARD, BLKZEROOUT, BLKFLSBUF, BLKGETSIZE64
and friends, close and reopen. Both backends run it in the same directory; each operation's
result line (errno, value, a hash of the bytes read), the ubd driver's log lines, the exit
status and the final files (byte for byte, holes too, kernel_ref's masks applied) are
compared. Each kind of disagreement is shrunk to a minimal program, re-running both sides
at every step."""

EPILOG = """exit status:
  0 every program agrees; 1 a disagreement (or linux.uml cannot run here: one line says
  why); 2 usage error.
examples:
  python -m kernel_ref fuzz --seed 7 --count 50
  python -m kernel_ref fuzz --seed 7 --count 200 --save-scenarios found/ --json
  python -m kernel_ref fuzz --replay found/"""


def add_parser(sub) -> None:
    p = sub.add_parser("fuzz", help="differential fuzzing of ubdsim against linux.uml",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", default=None, metavar="S",
                   help="the seed programs are made from (default: the time; printed)")
    p.add_argument("--count", type=_positive, default=20, metavar="N",
                   help="how many programs (default 20)")
    p.add_argument("--start", type=_natural, default=0, metavar="I",
                   help="index of the first program (default 0): SEED:I is program I")
    p.add_argument("--profile", choices=["6.1"], default="6.1",
                   help="ubdsim's kernel profile; linux.uml is 6.1, the only one judged here")
    p.add_argument("--max-ops", type=_positive, default=Config.max_ops, metavar="N",
                   help=f"operations per boot at most (default {Config.max_ops})")
    p.add_argument("--exclude", action="append", default=[], metavar="CLASS",
                   choices=sorted(OP_CLASSES) + list(FEATURES),
                   help="leave out an op class or unit feature (repeatable): "
                        + ", ".join(sorted(OP_CLASSES) + list(FEATURES)))
    p.add_argument("--shrink-runs", type=_natural, default=60, metavar="N",
                   help="judgements the shrinker may make per kind of disagreement "
                        "(default 60; 0: do not shrink)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="keep each program's files and working directories under DIR")
    p.add_argument("--save-scenarios", type=Path, metavar="DIR",
                   help="write each shrunk disagreement as a scenario module with its golden "
                        "capture into DIR (default: write nothing)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--replay", type=Path, metavar="DIR",
                   help="instead: run the scenarios saved in DIR on both backends and "
                        "compare linux.uml with their golden captures")
    p.add_argument("--capture", action="store_true",
                   help="with --replay: rewrite the golden captures from linux.uml only")


def _positive(text: str) -> int:
    value = _natural(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.capture and args.replay is None:
        parser.error("--capture goes with --replay DIR")
    if args.replay is not None:
        if not args.replay.is_dir():
            parser.error(f"--replay: no such directory: {args.replay}")
        return _replay(args)
    try:
        return _fuzz(args)
    except KernelUnavailable as err:
        print(f"python -m kernel_ref fuzz: error: {err}", file=sys.stderr)
        return 1


def _replay(args: argparse.Namespace) -> int:
    from .replay import replay

    def report(v) -> None:
        word = "agree" if v.agree else "DISAGREE"
        print(f"{word:<8} {v.name} ({v.seconds:.1f} s)", flush=True)
        for line in v.diffs + [f"note: {n}" for n in v.notes]:
            print("    " + line.replace("\n", "\n    "), flush=True)

    try:
        verdicts = replay(args.replay, args.capture, report, args.profile)
    except KernelUnavailable as err:
        print(f"python -m kernel_ref fuzz: error: {err}", file=sys.stderr)
        return 1
    agreeing = sum(v.agree for v in verdicts)
    print(f"{agreeing}/{len(verdicts)} scenarios agree")
    return 0 if agreeing == len(verdicts) else 1


def _fuzz(args: argparse.Namespace) -> int:
    start = time.monotonic()
    seed = args.seed if args.seed is not None else str(int(time.time()))
    config = Config(max_ops=args.max_ops, min_ops=min(Config.min_ops, args.max_ops),
                    exclude=frozenset(args.exclude))
    UmlBackend().check()
    ubdsim_side(args.profile).backend.check()
    summary = Summary(seed=seed, profile=args.profile, excluded=sorted(config.exclude))
    names = [f"{seed}:{i}" for i in range(args.start, args.start + args.count)]
    bar = Bar(len(names))
    with Pool(kernel_side(), ubdsim_side(args.profile), keep=args.keep) as pool:
        bar.show(0, "")
        disagreeing: list[Judgement] = []
        futures = [pool.submit(generate(name, config), keep_as=name) for name in names]
        for done, future in enumerate(futures, 1):
            j = future.result()
            summary.programs += 1
            summary.operations += j.program.operations
            if not j.agree:
                disagreeing.append(j)
                summary.disagreements += 1
                summary.found.append({"program": j.program.name, "categories": j.categories,
                                      "operations": j.program.operations, "diffs": j.diffs})
                for cat in j.categories:
                    summary.categories.setdefault(cat, []).append(j.program.name)
            bar.show(done, f"{summary.disagreements} disagree")
        firsts: dict[str, Judgement] = {}
        for j in disagreeing:
            firsts.setdefault(j.categories[0], j)
        if args.shrink_runs:
            kernel = UmlBackend().version() if args.save_scenarios else ""
            for n, (cat, j) in enumerate(firsts.items(), 1):
                def note(runs: int, what: str, n=n) -> None:
                    bar.show(len(names), f"shrinking {n}/{len(firsts)} [{cat}] run {runs}: {what}")
                note(0, "")
                shrunk = shrink(pool, j, args.shrink_runs, note,
                                lambda p: respects(p, config))
                summary.shrunk.append(_shrunk_json(shrunk))
                if shrunk.verdict == "shrunk" and args.save_scenarios is not None:
                    command = f"python -m kernel_ref fuzz --seed {seed}"
                    module, golden = save.write(args.save_scenarios, shrunk, kernel, command)
                    summary.saved += [str(module), str(golden)]
        summary.runs = pool.runs
    bar.close()
    summary.seconds = time.monotonic() - start
    if args.json:
        json.dump(summary.to_json(), sys.stdout, indent=1)
        print()
    else:
        print(summary.text())
    return 1 if summary.disagreements else 0


def _shrunk_json(s: Shrunk) -> dict:
    p = s.minimal.program
    lines = []
    for b in range(len(p.boots)):
        lines += [f"boot {b + 1}: {op['op']} {describe(op)}" for op in p.resolved(b)]
    return {"program": s.original.program.name, "target": s.target, "verdict": s.verdict,
            "reproduced": s.reproduced, "kernel_varies": s.kernel_varies,
            "minimal_confirmed": s.minimal_confirmed,
            "from_ops": s.original.program.operations, "ops": p.operations,
            "units": len(p.units), "runs": s.runs, "steps": s.steps,
            "options": p.options(), "files": p.files(), "program_lines": lines,
            "minimal": p.to_json(), "diffs": s.minimal.diffs}
