"""Repair what `ubdsim check` found in a COW file: narrow, named, crash-safe, never hiding damage.

  ubdsim repair [--dry-run] [--json] [-b BACKING] [--kernel P] [--mark-orphans] COW

Runs check, makes the repairs that exist for its findings, then runs check again and exits
with that check's status (qemu-img check -r's convention: 0 clean, 2 corruption left, 3
leaks left, 1 repair could not run). The repairs:
  clear-bits-past-end  clear bits of sectors past the last one (nothing ever reads them);
  rebuild-v2           a V2 file whose header Linux 6.1's backing switch rewrote as V3:
                       write the V2 header back and rebuild the 8 bitmap bytes the V3 header
                       overwrote from the data (assumes no guest wrote after the switch);
  mark-orphans         only with --mark-orphans: set the bits of sectors that hold written
                       data whose bit was lost, so the guest reads that data (it was written
                       but never acknowledged: the guest's e2fsck judges what it means).
  rebase               with -b BACKING, the backing file as it is now (moved, or copied
                       without `cp -p`): the header is pointed at it (its path, size and
                       mtime) by `ubdsim rebase`'s safe mode, which first compares what the
                       guest reads from the backing file between the old file and BACKING
                       (--trust-new when the old one is gone: nothing to compare with).
Everything else (a missing backing file with no -b, a changed backing file, a broken
header, a truncated file) is listed as not repaired with the reason; the exit status still
counts it.

Safety: the repaired file is built beside the original (its data extents copied with
copy_file_range, holes kept), fsynced and renamed over it: a kill at any moment leaves the
untouched original or the repaired file. Owner, group and mode are kept; a symlink's target
is repaired; a file with other hard links, or one another process holds locked, is refused.
This needs free space for one copy of the file's data (none on filesystems with reflinks).
--dry-run says what would be done and changes nothing.
"""
from __future__ import annotations

import argparse

from ..fileio import shown
from ..ops.repair import RepairResult, repair
from ..profiles import PROFILES, get_profile
from .check import report_text
from .render import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="say what would be done, change nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="the backing file as it is now: check against it, and point the "
                             "header at it (see rebase above)")
    parser.add_argument("--trust-new", action="store_true",
                        help="with -b: rebase without a content check (the old backing is gone)")
    parser.add_argument("--kernel", choices=list(PROFILES), default=None, metavar="P",
                        help="judge for one kernel profile (2.4, 2.4-stock, 6.1)")
    parser.add_argument("--mark-orphans", action="store_true",
                        help="also mark orphan data (written, bit lost) as the guest's")
    parser.add_argument("cow", metavar="COW", help="the COW file to repair")


def result_text(result: RepairResult) -> str:
    verb = "would repair" if result.dry_run else "repaired"
    lines = []
    for done in result.repaired:
        lines.append(f"{verb} {done['finding']} ({done['action']}): {done['text']}")
        lines += [f"  caveat: {c}" for c in done["caveats"]]
    for left in result.not_repaired:
        lines.append(f"not repaired {left['finding']} ({left['severity']}): {left['reason']}")
    if not result.repaired and not result.not_repaired:
        lines.append(f"{shown(result.path)}: nothing to repair")
    final = result.after or result.before
    lines += ["", "check " + ("before (dry run):" if result.after is None else "after repair:"),
              report_text(final)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    profile = get_profile(args.kernel) if args.kernel else None
    confirmed = frozenset({"mark-orphans"} if args.mark_orphans else ())
    result = repair(args.cow, backing=args.backing, profile=profile, dry_run=args.dry_run,
                    confirmed=confirmed, trust_new=args.trust_new)
    print(to_json(result) if args.json else result_text(result))
    return result.status
