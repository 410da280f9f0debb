"""python -m kernel_ref list | run NAME... | run --all [--keep DIR] [--against ...] | capture ...
                     | boot [OPTIONS] WORD... -- COMMAND [ARG...]
                     | fuzz [--seed S] [--count N] [--profile 6.1] [--keep DIR] [--json]

run      runs each scenario on linux.uml and on `ubdsim run --kernel 6.1` and compares
         the ubd log lines, guest transcripts and exit statuses, and every file byte for
         byte with its holes. The last line is exactly `N/M scenarios agree`; the exit
         status is 0 only when all agree.
           --against golden    compare ubdsim with the recorded kernel (no linux.uml boot)
           --against oracle    compare the live linux.uml with its golden capture (no ubdsim):
                               a difference means the kernel package (or host) changed
capture  regenerates golden captures from linux.uml only (never from ubdsim).
boot     boots linux.uml on kernel options and runs a command in it, printing what
         `ubdsim run` prints, to compare the two by hand (`boot --help`).
fuzz     generates guest programs from a seed, runs each on linux.uml and on ubdsim, and
         shrinks every kind of disagreement to a minimal program (`fuzz --help`).

When linux.uml cannot run on this host, every command that needs it says why in one line
and exits with 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import boot_command, scenario
from .errors import KernelUnavailable
from .fuzz import cli as fuzz_cli
from .run import capture, run_many

MODES = {"linux.uml": "live", "golden": "golden", "oracle": "oracle"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kernel_ref", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios")
    boot_command.add_parser(sub)
    fuzz_cli.add_parser(sub)
    for name, text in (("run", "run and compare scenarios"),
                       ("capture", "regenerate golden captures from linux.uml")):
        p = sub.add_parser(name, help=text)
        p.add_argument("names", nargs="*", metavar="NAME")
        p.add_argument("--all", action="store_true", help="every scenario")
        p.add_argument("--keep", type=Path, metavar="DIR",
                       help="keep each backend's working directory under DIR")
        if name == "run":
            p.add_argument("--against", choices=sorted(MODES), default="linux.uml",
                           help="what ubdsim is compared with (default: the live linux.uml); "
                                "'oracle' compares linux.uml with its golden capture")
            p.add_argument("-v", "--verbose", action="store_true",
                           help="also print notes for agreeing scenarios")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "boot":
        return boot_command.run(args, parser)
    if args.command == "fuzz":
        return fuzz_cli.run(args, parser)
    try:
        return _command(args)
    except KernelUnavailable as err:
        print(f"python -m kernel_ref {args.command}: error: {err}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    if args.command == "list":
        for name, scn in scenario.load_all().items():
            print(f"{name:<40} {scn['about'].splitlines()[0]}")
        return 0
    if not args.all and not args.names:
        print("name at least one scenario, or --all", file=sys.stderr)
        return 2
    try:
        chosen = scenario.select(args.names, args.all)
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    if args.command == "capture":
        return _capture(chosen, args.keep)
    return _run(chosen, MODES[args.against], args.keep, args.verbose)


def _run(chosen: list[dict], mode: str, keep: Path | None, verbose: bool) -> int:
    def report(verdict) -> None:
        word = "agree" if verdict.agree else "DISAGREE"
        print(f"{word:<8} {verdict.name} ({verdict.seconds:.1f} s)", flush=True)
        for diff in verdict.diffs:
            print("    " + diff.replace("\n", "\n    "))
        if verdict.notes and (verbose or not verdict.agree or mode == "live"):
            for note in verdict.notes:
                print("    note: " + note.replace("\n", "\n    "))
        sys.stdout.flush()

    verdicts = run_many(chosen, mode, keep, report)
    agreeing = sum(v.agree for v in verdicts)
    print(f"{agreeing}/{len(verdicts)} scenarios agree")
    return 0 if agreeing == len(verdicts) else 1


def _capture(chosen: list[dict], keep: Path | None) -> int:
    import shutil
    import tempfile
    from concurrent.futures import ThreadPoolExecutor
    from .backends import UmlBackend
    from .run import PARALLEL
    UmlBackend().check()
    root = keep or Path(tempfile.mkdtemp(prefix="kernel_ref-capture-"))
    def one(scn: dict) -> str:
        try:
            name, path = capture(scn, root)
            return f"captured {name} -> {path}"
        except Exception as err:          # report every scenario, then fail at the end
            return f"FAILED   {scn['name']}: {err}"

    try:
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            lines = []
            for line in pool.map(one, chosen):
                print(line, flush=True)
                lines.append(line)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    failed = sum(line.startswith("FAILED") for line in lines)
    print(f"{len(lines) - failed}/{len(lines)} captured")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
