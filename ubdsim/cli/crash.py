"""Check every crash state of a recorded run: would the guest's data survive a crash there?

    ubdsim crash LOG --check 'CMD {device}' [--model process|power] [--points P]
                 [--after MARK] [--unit N] [--max N] [--max-drop K] [--jobs J]
                 [--timeout S] [--from DIR] [--json]

For each crash state (below) the unit's device is rebuilt as the next boot would see it: the
COW file as the crash left it, merged with its backing file through the device view (the
bitmap on disk decides, the in-memory one is gone), or the raw file; then `sh -c CMD` runs
with {device} replaced by a private copy of that raw image ({cow}: a copy of the COW file,
{backing}: the backing file). Exit status 0 passes. For example:
  ubdsim crash L --check 'e2fsck -fn {device}' --after ready

Models (every choice is named in the report):
  process (default)  ubdsim/UML dies, the host keeps every completed write: the states are
                     the prefixes of the log's host writes (every request boundary, and
                     inside a request between its data write and its bitmap write)
  power              the host loses power: writes since the last host sync may be lost, at
                     most K pieces per state (--max-drop, default 1), a piece being a
                     512-byte sector of one host write (sector atomicity); creation and
                     resize are durable. Under 6.1 without flag s there is no host sync at
                     all (a guest flush reaches no host file): the report says so.
Crash points (--points): writes (process default), requests, flushes (power default:
where the guest believes it is safe), marks, end; --after MARK keeps those from a mark on.

The report lists the failing states smallest first (fewest host writes, then fewest lost
pieces), each with the writes that make the difference: the host writes since the last
passing crash point (process) or the lost pieces (power), and a summary: states tried,
distinct devices checked, failed, time. States that leave the same device are checked once.
--max N stops after N checks (default 1000; the report says it is not exhaustive).
A progress line is shown on a terminal.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ..fileio import shown
from .argtypes import int_range, positive_seconds
from .progress import ProgressBar
from .status import OK, USAGE

FAILED = 3
SHOW_FAILED = 10

EPILOG = f"""exit codes:
  0    every crash state checked passed
  {FAILED}    at least one crash state fails the check (listed, smallest first)
  1    could not run (not a log, a backing file that changed, no starting copy); one line
  2    usage error (no {{device}} in --check, a bad --upto/--after/--unit)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG")
    parser.add_argument("--check", required=True, metavar="'CMD {device}'",
                        help="shell command run on each state; {device}: the raw device image, "
                             "{cow}: the COW file, {backing}: the backing file")
    parser.add_argument("--model", choices=("process", "power"), default="process")
    parser.add_argument("--points", choices=("writes", "requests", "flushes", "marks", "end"),
                        default=None, help="crash points (default: writes for process, "
                                           "flushes for power)")
    parser.add_argument("--after", metavar="MARK", default=None,
                        help="only crash points at or after this mark")
    parser.add_argument("--unit", type=int_range(0), default=None, metavar="N",
                        help="the unit whose device is checked (default: the first one written)")
    parser.add_argument("--max", type=int_range(1), default=1000, metavar="N", dest="max_states",
                        help="stop after N checks (default 1000)")
    parser.add_argument("--max-drop", type=int_range(1), default=1, metavar="K",
                        help="power model: at most K lost pieces per state (default 1)")
    parser.add_argument("-j", "--jobs", type=int_range(1), default=1, metavar="J",
                        help="checks run at once (default 1)")
    parser.add_argument("--timeout", type=positive_seconds, default=60.0, metavar="S",
                        help="a check running longer fails (default 60 s)")
    parser.add_argument("--from", dest="from_dir", metavar="DIR", default=None,
                        help="copies of the original files (see `ubdsim replay --help`)")
    parser.add_argument("--json", action="store_true", help="one JSON object")


class StateProgress(ProgressBar):
    """`crash [####....] 12/40 points, 31 checked, 2 failed` on a terminal, nothing elsewhere."""

    def describe(self, done: int, total: int, checked: int = 0, failed: int = 0) -> str:
        return f"{done}/{total} points, {checked} checked, {failed} failed "


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..lab.crash import crash
    from ..lab.logformat import read_log

    bar = StateProgress("crash")
    with read_log(args.log) as log:
        try:
            report = crash(log, args.check, model=args.model, points=args.points,
                           after=args.after, unit=args.unit, max_states=args.max_states,
                           max_drop=args.max_drop, jobs=args.jobs, timeout=args.timeout,
                           from_dir=args.from_dir, progress=bar)
        except UsageError as err:
            bar.close()
            print(f"ubdsim crash: error: {err}", file=sys.stderr)
            return USAGE
        finally:
            bar.close()
    if args.json:
        out = asdict(report)
        out["per_second"] = report.per_second
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        _print(report)
    return FAILED if report.failed else OK


def _print(r) -> None:
    print(f"crash states of {shown(r.log)}: {r.model} model, unit {r.unit}, crash points: "
          f"{r.points}" + (f" from mark {r.after}" if r.after else "")
          + (f", at most {r.max_drop} lost pieces per state" if r.model == "power" else ""))
    for note in r.notes:
        print(f"  note: {note}")
    print(f"  check: {r.command}")
    for f in r.failed[:SHOW_FAILED]:
        status = "timed out" if f.status is None else f"exit {f.status}"
        more = f" (and {f.same_device} later states with the same device)" if f.same_device else ""
        print(f"FAILED {f.state}: crash after host write #{f.point}: {status}{more}")
        if f.dropped:
            print("  lost: " + "; ".join(w.text for w in f.writes))
            print("  at : " + ", ".join(p.label() for p in f.dropped))
        else:
            since = (f"since the last passing point #{f.since_pass}" if f.since_pass is not None
                     else "since the first crash point, none of which passed")
            print(f"  writes {since}:")
            for w in f.writes:
                print(f"    {w.text}")
            if f.next_write is not None:
                print(f"  the next write would have been: {f.next_write.text}")
        tail = [line for line in f.output.strip().splitlines() if line.strip()][-3:]
        for line in tail:
            print(f"  | {line}")
    if len(r.failed) > SHOW_FAILED:
        print(f"... and {len(r.failed) - SHOW_FAILED} more failing devices (--json lists all)")
    done = "all of them" if r.complete else f"STOPPED by --max at crash point #{r.stopped_at}"
    print(f"summary: {r.crash_points} crash points, {r.states} states ({done}), {r.checked} "
          f"distinct devices checked ({r.duplicates} states left a device already checked"
          + (f", {r.no_device} no device at all" if r.no_device else "") + f"), "
          f"{len(r.failed)} failed ({r.failed_states} states), {r.passed} passed; "
          f"{r.elapsed:.1f} s, {r.per_second:.1f} checks/s")
