"""Set a mark in the lab log of the run this program is part of.

    ubdsim mark NAME

Run it from a guest of `ubdsim run --record LOG` (or --trace): the run puts the path of its
mark socket in $UBDSIM_MARK, which every guest process inherits. The mark is recorded in
order with the I/O: `ubdsim mark` returns only once the recorder has written it, so every
request the guest completed before is before it in the log and every later one after it.
`ubdsim replay LOG --upto NAME` rebuilds the files as they were at the mark; `ubdsim crash
--after NAME` checks only the crash states from there on. For `ubdsim serve`, whose clients
do not inherit its environment, the server prints the path; set UBDSIM_MARK to it.

NAME: 1 to 64 characters (letters, digits, _ . : -) starting with a letter or _; each name
once per log; start, end and last are reserved.
"""
from __future__ import annotations

import argparse
import os
import sys

from .status import ERROR, OK, USAGE

EPILOG = """exit status:
  0    the mark is recorded (--print shows how many host writes precede it)
  1    no recorder to reach ($UBDSIM_MARK unset or gone), or it refused the mark
  2    usage error (a bad NAME)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the mark's name")
    parser.add_argument("--print", action="store_true", dest="show",
                        help="print the number of host writes recorded before the mark")


def run(args: argparse.Namespace) -> int:
    from ..lab.marks import ENV, MarkError, check_name, send_mark
    problem = check_name(args.name)
    if problem is not None:
        print(f"ubdsim mark: error: {problem}", file=sys.stderr)
        return USAGE
    path = os.environ.get(ENV)
    if not path:
        print(f"ubdsim mark: error: ${ENV} is not set: run this inside `ubdsim run --record LOG` "
              "(or --trace), or set it to the path `ubdsim serve --record` printed",
              file=sys.stderr)
        return ERROR
    try:
        count = send_mark(args.name, path)
    except MarkError as err:
        print(f"ubdsim mark: error: {err}", file=sys.stderr)
        return ERROR
    if args.show:
        print(count)
    return OK
