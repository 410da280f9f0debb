"""Reproduce COW corruption: make the damage, show it, explain it, and show the safe way.

    ubdsim repro list [--json]
    ubdsim repro show NAME [--kernel P] [--json]
    ubdsim repro run NAME [--kernel P] [--keep DIR] [--json]

Each scenario is a small script of steps through ubdsim's own commands (mkcow, check,
compare, moo, run, crash ...) and real tools (e2fsck, debugfs, mkfs.ext4, uml_mkcow,
uml_moo, dd, cp, touch, mv). `run` makes the damage in a fresh temporary directory, shows
it (each command and its output), explains it naming the kernel function responsible,
then runs the safe way in a second fresh directory and shows it clean. Guests run under
`ubdsim run --kernel P`; --kernel picks the profile where a scenario has variants (the
list says which profiles each supports; the first is its default). --keep DIR leaves the
files in DIR/damage and DIR/safe (DIR must not exist yet, or be empty). `show` prints the
steps and the explanation without running anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..repro.catalog import UnknownScenario, get, load_all
from ..repro.render import render_report, render_scenario, scenario_dict
from ..repro.runner import run_scenario
from .status import ERROR, OK, USAGE

EPILOG = """exit codes:
  0    run: the damage was reproduced as the scenario claims and the safe way was clean;
       list, show: done
  1    run: it was not (a finding: the steps that differed are listed), or a setup step failed
  2    usage error: unknown scenario, a profile the scenario does not support, a bad --keep"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="list|show|run", required=True)
    listing = sub.add_parser("list", help="the scenarios, with their profiles")
    listing.add_argument("--json", action="store_true", help="one JSON array")
    for name, text in (("show", "print a scenario's steps and explanation"),
                       ("run", "run a scenario: damage, explanation, safe way")):
        one = sub.add_parser(name, help=text)
        one.add_argument("name", metavar="NAME")
        one.add_argument("--kernel", metavar="P", default=None,
                         help="profile (default: the scenario's first)")
        one.add_argument("--json", action="store_true", help="one JSON object")
        if name == "run":
            one.add_argument("--keep", metavar="DIR", default=None,
                             help="leave the files in DIR/damage and DIR/safe")


def _fail(text: str) -> int:
    print(f"ubdsim repro: error: {text}", file=sys.stderr)
    return USAGE


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        table = load_all()
        if args.json:
            print(json.dumps([{"name": s.name, "title": s.title, "profiles": list(s.profiles)}
                              for s in table.values()], indent=2))
        else:
            width = max(map(len, table))
            for s in table.values():
                print(f"{s.name:<{width}}  [{', '.join(s.profiles)}]  {s.title}")
        return OK
    try:
        scenario = get(args.name)
    except UnknownScenario:
        return _fail(f"unknown scenario {args.name!r} (see 'ubdsim repro list')")
    profile = args.kernel or scenario.profiles[0]
    if profile not in scenario.profiles:
        return _fail(f"{scenario.name} supports the profiles {', '.join(scenario.profiles)}, "
                     f"not {profile!r}")
    if args.action == "show":
        if args.json:
            print(json.dumps(scenario_dict(scenario, profile), indent=2))
        else:
            print(render_scenario(scenario, profile))
        return OK
    keep = None
    if args.keep is not None:
        keep = Path(args.keep)
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            return _fail(f"--keep {args.keep}: not an empty directory")
    report = run_scenario(scenario, profile, keep=keep)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render_report(report))
    return OK if report.ok else ERROR
