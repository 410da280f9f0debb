"""Point a COW file at another backing file: what the kernel's backing switch does, safely.

  ubdsim rebase -b NEW [-u] [--trust-new] [-F raw] [--json] COW
  ubdsim rebase --recover COW

Rewrites COW's header to name NEW: NEW's absolute path (directory links resolved, as the
kernel's absolutize() writes it), NEW's mtime and NEW's size. The bitmap and the data are not
touched. Typical use: the backing file was copied or moved with plain `cp` (new mtime), and
the kernel now refuses the COW file with `mtime mismatch`; Linux 6.1 booted with
`ubd0=COW,NEW` switches the header itself only when NEW already has the header's mtime and
size, so it cannot fix this.

Safe mode (default): NEW must exist, be a regular file or a block device and have the
header's size. The sectors the COW file does NOT hold -- those the guest reads from the
backing file -- are compared between the old backing file and NEW; the first difference is
refused with its byte offset. A new mtime alone is fine. If the old backing file is gone
(or is not the header's size any more) nothing can be compared: refused unless --trust-new.
-u, --unsafe: like `qemu-img rebase -u`, rewrite the pointer without reading any data (NEW
must still exist: its mtime and size go into the header; the size must still be the header's).

Always refused, with one line and exit 1, nothing changed:
  - NEW is COW itself, or NEW's backing chain leads back to COW or loops (qemu-img rebase -u
    makes such loops silently, and qemu-img check then never returns);
  - a COW file another process holds fcntl-locked (a running UML kernel), naming its pid;
  - a path too long for the header's path field (V1: 255 bytes, V2/V3: 4095, made absolute).

Header versions: rebase keeps the file's version (V1, V2, V3, broken 64-bit V3). The 6.1
kernel does not: its backing switch always writes a V3 header, which over a V1 or V2 file
lands on the old bitmap and loses the COW file's data. Use rebase for old files.

Crash safety: a journal (.COW.ubdsim-rebase, beside the COW file) holding the old and new
header is fsynced before the header is written and removed after the header's fsync. If
rebase is killed, the next `ubdsim rebase` of that file (or --recover) completes the new
header when NEW is still the file it was, otherwise restores the old one. Rebase needs write
access to the COW file's directory.

-F FMT is accepted for qemu-img compatibility: only `raw`, because the kernel reads a backing
file raw.
"""
from __future__ import annotations

import argparse
import sys

from ..fileio import shown
from ..ops.rebase import RebaseResult, rebase, recover
from .progress import ProgressBar
from .render import to_json
from .status import OK, USAGE

RECOVERED = {"completed": "finished an interrupted rebase (new header completed)",
             "restored": "undid an interrupted rebase (old header restored: its new backing "
                         "file changed since)",
             "discarded": "removed the journal of a rebase interrupted before it touched the header"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-b", "--backing", metavar="NEW", help="the new backing file")
    parser.add_argument("-u", "--unsafe", action="store_true",
                        help="rewrite the header without comparing any data")
    parser.add_argument("--trust-new", action="store_true",
                        help="safe mode without the old backing file: accept NEW unchecked")
    parser.add_argument("-F", "--backing-format", metavar="FMT", choices=("raw",), default="raw",
                        help="the new backing file's format (only raw: the kernel reads it raw)")
    parser.add_argument("--recover", action="store_true",
                        help="only finish or undo an interrupted rebase of COW")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.add_argument("cow", metavar="COW", help="the COW file whose header is rewritten")


def _text(result: RebaseResult) -> str:
    lines = []
    if result.recovered:
        lines.append(f"{shown(result.cow)}: {RECOVERED[result.recovered]}")
    if not result.changed:
        lines.append(f"{shown(result.cow)} already names '{shown(result.new_backing)}' with its "
                     "mtime and size: nothing to do")
        return "\n".join(lines)
    check = {"compared": f"{result.compared_bytes} bytes the COW file does not hold compared: identical",
             "same-file": "NEW is the old backing file under another name, unchanged",
             "trusted": "content not checked (--trust-new)",
             "skipped": "content not checked (-u)"}[result.check]
    lines.append(f"rebased {shown(result.cow)} (V{result.version} header, {result.layout} layout): "
                 f"'{shown(result.old_backing)}' -> '{shown(result.new_backing)}', mtime "
                 f"{result.old_mtime} -> {result.new_mtime}, size {result.size}; {check}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.recover:
        if args.backing is not None:
            print("ubdsim rebase: usage: --recover takes only COW", file=sys.stderr)
            return USAGE
        done = recover(args.cow)
        if args.json:
            print(to_json({"cow": args.cow, "recovered": done}))
        else:
            print(f"{shown(args.cow)}: {RECOVERED[done]}" if done
                  else f"{shown(args.cow)}: no interrupted rebase to recover")
        return OK
    if args.backing is None:
        print("ubdsim rebase: usage: ubdsim rebase -b NEW [-u] [--trust-new] [--json] COW",
              file=sys.stderr)
        return USAGE
    bar = ProgressBar("comparing")
    try:
        result = rebase(args.cow, args.backing, unsafe=args.unsafe, trust_new=args.trust_new,
                        progress=bar)
    finally:
        bar.close()
    for warning in result.warnings:
        print(f"ubdsim rebase: warning: {warning}", file=sys.stderr)
    print(to_json(result) if args.json else _text(result))
    return OK
