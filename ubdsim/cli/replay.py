"""Rebuild the files of a recorded run as they were after N host writes (or at a mark).

    ubdsim replay LOG [--upto N|MARK|last|start] --into DIR [--from DIR] [--force] [--json]

Every unit file the run wrote (its COW file or raw file) is rebuilt in DIR under its own
name from its content when recording started, plus the log's first N host writes, in order
(`#N` in `ubdsim log show`; --upto MARK: the writes before `ubdsim mark MARK`; default
last: all of them, which must give the live run's final files: the summary says whether
they match the sha256 the recorder took at the end). Backing files are never rebuilt: the
device never writes them, and a rebuilt COW file names its backing file as the original did.

The starting content: nothing for a file the run created (a COW file made at boot); the
log's own copy with `--record-snapshot`; otherwise a copy of the original with the sha256
the log recorded, in --from DIR (by name) or still at its path. Without one the replay is
refused with one line that says so.

Outputs are built beside their final name and published whole; an existing file in DIR is
refused unless --force, and a recorded file itself never (DIR may not be where it lives
under the same name). A file the run had not created yet at that point is not written.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ..fileio import shown
from .status import OK

EPILOG = """exit codes:
  0    rebuilt (and, at the last write, equal to the live run's files)
  1    refused or failed (not a log, no starting copy, an existing output, a mismatch with
       the live run's final sha256); one line on stderr
  2    usage error (a bad --upto)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", metavar="LOG")
    parser.add_argument("--upto", default="last", metavar="N|MARK",
                        help="host writes to apply: a number, a mark's name, start or last "
                             "(default)")
    parser.add_argument("--into", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--from", dest="from_dir", metavar="DIR", default=None,
                        help="a directory holding copies of the original files (by name)")
    parser.add_argument("-f", "--force", action="store_true",
                        help="replace existing files in the output directory")
    parser.add_argument("--json", action="store_true", help="one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..lab.logformat import read_log
    from ..lab.replay import replay
    from .status import ERROR, USAGE

    with read_log(args.log) as log:
        try:
            result = replay(log, args.upto, args.into, from_dir=args.from_dir, force=args.force)
        except UsageError as err:
            print(f"ubdsim replay: error: {err}", file=sys.stderr)
            return USAGE
    if args.json:
        json.dump(asdict(result), sys.stdout, indent=1)
        print()
    else:
        where = f" (mark {result.mark})" if result.mark else ""
        print(f"replayed {result.upto} of {result.total} host writes{where} into "
              f"{shown(args.into)}:")
        for f in result.files:
            if not f.exists:
                print(f"  {shown(f.original)}: not created yet at that point (nothing written)")
                continue
            print(f"  {shown(f.output)}: {f.size} bytes, sha256 {f.sha256}, {f.writes} host "
                  f"writes over {f.start}")
        if result.matches_live is not None:
            print("equal to the live run's final files: "
                  + ("yes" if result.matches_live else "NO"))
    if result.matches_live is False:
        print("ubdsim replay: error: the rebuilt files differ from the live run's final files "
              "(the log or a starting copy is not what the run used)", file=sys.stderr)
        return ERROR
    return OK
