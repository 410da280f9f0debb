"""Merge a COW file with its backing file, like uml_moo but safer.

  ubdsim moo [-b ACTUAL_BACKING] COW NEWFILE     write the merged image to NEWFILE
  ubdsim moo [-b ACTUAL_BACKING] -d COW          write the COW's sectors into the backing file

-b names the backing file when the header's path is wrong (a COW file made in a chroot); it
must still match the header's size and mtime. -b may come before or after -d.

Refuses, with one line and exit 1: a backing file that is missing or whose size or mtime
differ from the header; a COW file (or, with -d, a backing file) that another process holds
fcntl-locked, as a running UML kernel does; an existing NEWFILE unless -f.

Unlike uml_moo:
- a final partial sector is kept (uml_moo cuts a 4194404-byte image to 4194304 bytes);
- NEWFILE is written under a temporary name, sparse (holes of the backing file and zero blocks
  are not written), fsynced and renamed into place: a crash leaves no half image behind;
- -d writes only the sectors marked in the COW file, and is safe to re-run after a crash:
  a journal (.COW.ubdsim-merge next to the COW file) is fsynced before the first write and
  removed after the final fsync; a re-run that finds it accepts the backing file's changed
  mtime and writes the marked sectors again (the result is the same). -d therefore needs
  write access to the COW file's directory (the COW file itself is only read);
- V1/V2 files with the rounding bug: the last sectors have no bit, so they come from the
  backing file (uml_moo reads their bits from past its bitmap buffer).
A progress bar is shown when stderr is a terminal; --json prints a summary.
"""
from __future__ import annotations

import argparse
import sys

from ..ops.merge import merge_in_place, merge_new
from .progress import ProgressBar
from .render import merge_text, to_json
from .status import OK, USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backing", metavar="ACTUAL_BACKING",
                        help="use this backing file instead of the one named in the header")
    parser.add_argument("-d", "--in-place", action="store_true",
                        help="merge destructively into the backing file (crash-safe to re-run)")
    parser.add_argument("-f", "--force", action="store_true", help="replace an existing NEWFILE")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("cow", metavar="COW", help="the COW file to merge")
    parser.add_argument("newfile", metavar="NEWFILE", nargs="?",
                        help="the merged image to create (not with -d)")


def run(args: argparse.Namespace) -> int:
    if (args.newfile is None) != args.in_place:
        print("ubdsim moo: usage: ubdsim moo [-b BACKING] -d COW  |  ubdsim moo [-b BACKING] COW NEWFILE",
              file=sys.stderr)
        return USAGE
    bar = ProgressBar("merging")
    try:
        if args.in_place:
            result = merge_in_place(args.cow, backing=args.backing, progress=bar)
        else:
            result = merge_new(args.cow, args.newfile, backing=args.backing,
                               force=args.force, progress=bar)
    finally:
        bar.close()
    print(to_json(result) if args.json else merge_text(result))
    return OK
