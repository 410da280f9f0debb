"""Merge a COW file with its backing file, like uml_moo but safer.

  ubdsim moo [-b ACTUAL_BACKING] [-t CACHE] COW NEWFILE   write the merged image to NEWFILE
  ubdsim moo [-b ACTUAL_BACKING] -d COW          write the COW's sectors into the backing file
  ubdsim moo --chain [-f] COW NEWFILE            merge a whole chain of COW files into NEWFILE
  ubdsim moo --chain -d COW                      merge the top layer into the COW layer below

-b names the backing file when the header's path is wrong (a COW file made in a chroot); it
must still match the header's size and mtime. -b may come before or after -d.

Refuses, with one line and exit 1: a backing file that is missing or whose size or mtime
differ from the header; a COW file (or, with -d, a backing file) that another process holds
fcntl-locked, as a running UML kernel does; an existing NEWFILE unless -f, and even with -f
one another process holds locked (a running guest's disk, which a rename would take from it).

Unlike uml_moo:
- a final partial sector is kept (uml_moo cuts a 4194404-byte image to 4194304 bytes);
- NEWFILE is written under a temporary name, sparse (holes of the backing file and zero blocks
  are not written), fsynced and renamed into place: a crash leaves no half image behind; the
  host kernel does the copying (copy_file_range: a reflink where the file system shares
  extents; scripts/bench_moo.py times it against uml_moo);
- -t CACHE, qemu-img convert's option for its output: `writeback` (ubdsim's default) fsyncs
  NEWFILE before the rename and its directory after it; `unsafe` (qemu-img convert's
  default, and what uml_moo does: it never syncs) leaves that to the host's write-back, so
  a crashed ubdsim still leaves no half NEWFILE, but a power cut soon after may. -d always
  syncs (its journal's crash safety rests on it);
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

Other COW files over the same backing file: -d rewrites the backing file (its bytes and its
mtime), so every OTHER COW file over it no longer matches it and its guest's disk is lost
(and a merge within the same second as the backing file's last change leaves the mtime as
it was: the kernel would then use them over the changed disk without a word).
Before it writes anything (after every other check), -d looks in the COW file's directory,
and in each --also-check DIR, for COW files whose header names the same backing file (the
same device and inode, whatever the path's spelling) and whose header mtime still matches
it, and names them. If there are any: on a terminal (stdin is a tty) it asks whether to
merge anyway, unless --yes; not on a terminal it refuses with one line (exit 1) unless
--yes. With --yes it names them on stderr and merges. With none it merges as before. (With
--chain -d the file written is the COW layer below, and the COW files over it are looked
for.) `ubdsim info --summary DIR` lists COW files by backing file the same way.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..fileio import shown
from ..ops.merge import (SharedBacking, merge_chain_down, merge_chain_new, merge_in_place,
                         merge_new, named_few)
from .progress import ProgressBar
from .render import merge_text, to_json
from .status import ERROR, OK, USAGE

LISTED = 10                      # other COW files named one by one at the prompt
CACHE_MODES = ("writeback", "unsafe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backing", metavar="ACTUAL_BACKING",
                        help="use this backing file instead of the one named in the header")
    parser.add_argument("-d", "--in-place", action="store_true",
                        help="merge destructively into the backing file (crash-safe to re-run)")
    parser.add_argument("-f", "--force", action="store_true", help="replace an existing NEWFILE")
    parser.add_argument("-t", dest="cache", choices=CACHE_MODES, default="writeback",
                        help="NEWFILE's cache mode, as qemu-img convert -t: writeback (default) "
                             "fsyncs it before it is renamed into place, unsafe does not "
                             "(like uml_moo)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own: merge a chain of COW files (backing files that are "
                             "COW files, down to a raw file); with -d, commit COW into the "
                             "layer below it")
    parser.add_argument("--also-check", metavar="DIR", action="append", default=[],
                        help="with -d: also look in DIR for other COW files over the same "
                             "backing file (repeatable; the COW file's directory always)")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="with -d: merge even when other COW files over the backing file "
                             "still match it (they are named, then invalidated)")
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
    if args.cache != "writeback" and args.in_place:
        print("ubdsim moo: usage: -t goes with NEWFILE (-d always syncs: its journal's crash "
              "safety rests on it)", file=sys.stderr)
        return USAGE
    if args.also_check and not args.in_place:
        print("ubdsim moo: usage: --also-check goes with -d (only a merge into the backing "
              "file changes it)", file=sys.stderr)
        return USAGE
    for directory in args.also_check:
        if not os.path.isdir(directory):
            print(f"ubdsim moo: error: --also-check '{shown(directory)}' is not a directory",
                  file=sys.stderr)
            return ERROR
    bar = ProgressBar("merging")
    confirm = Confirmation(args.yes)
    try:
        if args.chain and args.in_place:
            result = merge_chain_down(args.cow, progress=bar, confirm=confirm,
                                      also_check=args.also_check)
        elif args.chain:
            result = merge_chain_new(args.cow, args.newfile, force=args.force, progress=bar,
                                     sync=args.cache == "writeback")
        elif args.in_place:
            result = merge_in_place(args.cow, backing=args.backing, progress=bar,
                                    confirm=confirm, also_check=args.also_check)
        else:
            result = merge_new(args.cow, args.newfile, backing=args.backing,
                               force=args.force, progress=bar, sync=args.cache == "writeback")
    finally:
        bar.close()
    print(to_json(result) if args.json else merge_text(result))
    return OK


class Confirmation:
    """What `moo -d` does when other COW files over the backing file still match it: with
    --yes name them and go on; on a terminal ask; elsewhere say no (the op refuses)."""

    def __init__(self, yes: bool) -> None:
        self.yes = yes

    def __call__(self, shared: SharedBacking) -> bool:
        n = len(shared.others)
        what = f"{n} other COW file{'s' if n != 1 else ''} over '{shown(shared.backing)}'"
        if self.yes:
            print(f"ubdsim moo: merging anyway (--yes): the disk under {what} changes: "
                  f"{named_few(shared.others, LISTED)}", file=sys.stderr)
            return True
        if not sys.stdin.isatty():
            return False
        lines = [f"ubdsim moo: {what} still match{'es' if n == 1 else ''} it; merging "
                 f"'{shown(shared.cow)}' into it rewrites the disk under them (their guests' "
                 "disks are lost):"]
        lines += [f"  {shown(path)}" for path in shared.others[:LISTED]]
        if n > LISTED:
            lines.append(f"  ... and {n - LISTED} more")
        sys.stderr.write("\n".join(lines) + "\nmerge anyway? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        return answer.strip().lower() in ("y", "yes")
