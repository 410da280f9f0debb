"""Merge a COW file with its backing file, like uml_moo but safer.

  ubdsim moo [-b ACTUAL_BACKING] COW NEWFILE     write the merged image to NEWFILE
  ubdsim moo [-b ACTUAL_BACKING] -d COW          write the COW's sectors into the backing file
  ubdsim moo --chain [-f] COW NEWFILE            merge a whole chain of COW files into NEWFILE
  ubdsim moo --chain -d COW                      merge the top layer into the COW layer below

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

--chain is ubdsim's own (UML cannot stack; see `ubdsim run --help`): COW's backing file may
itself be a COW file, and so on down to a raw file; every link's size and mtime are checked
against the header above it, and loops and missing files are refused with one line.
`--chain COW NEWFILE` writes the device `ubdsim run --chain` shows a guest (the raw bottom's
size) as NEWFILE, written as above. `--chain -d COW` commits COW into the layer below it:
below a COW file, COW's marked sectors go into that file's data area and are marked in its
bitmap, in a copy rebuilt beside it and renamed over it (a crash leaves the old file or the
new one); its mtime changes, so COW and any other COW file over it no longer match it (as
after any -d). Below a raw file it is the ordinary -d. -b does not combine with --chain.
A progress bar is shown when stderr is a terminal; --json prints a summary.
"""
from __future__ import annotations

import argparse
import sys

from ..ops.merge import merge_chain_down, merge_chain_new, merge_in_place, merge_new
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
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own: merge a chain of COW files (backing files that are "
                             "COW files, down to a raw file); with -d, commit COW into the "
                             "layer below it")
    parser.add_argument("cow", metavar="COW", help="the COW file to merge")
    parser.add_argument("newfile", metavar="NEWFILE", nargs="?",
                        help="the merged image to create (not with -d)")


def run(args: argparse.Namespace) -> int:
    if (args.newfile is None) != args.in_place:
        print("ubdsim moo: usage: ubdsim moo [-b BACKING] -d COW  |  ubdsim moo [-b BACKING] COW NEWFILE",
              file=sys.stderr)
        return USAGE
    if args.chain and args.backing is not None:
        print("ubdsim moo: usage: -b does not combine with --chain (each layer's header names "
              "the one below it)", file=sys.stderr)
        return USAGE
    bar = ProgressBar("merging")
    try:
        if args.chain and args.in_place:
            result = merge_chain_down(args.cow, progress=bar)
        elif args.chain:
            result = merge_chain_new(args.cow, args.newfile, force=args.force, progress=bar)
        elif args.in_place:
            result = merge_in_place(args.cow, backing=args.backing, progress=bar)
        else:
            result = merge_new(args.cow, args.newfile, backing=args.backing,
                               force=args.force, progress=bar)
    finally:
        bar.close()
    print(to_json(result) if args.json else merge_text(result))
    return OK
