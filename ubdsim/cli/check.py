"""Find damage in a UML COW file: the header, the bitmap against the data, the backing file.

  ubdsim check [--json] [-b BACKING] [--kernel P] [-U] [--chain] COW

Each finding has a stable id, a severity and one sentence naming the kernel behaviour behind
it. Severities, as qemu-img check counts them:
  corruption  what a guest sees is wrong, or no kernel can open the device: a header that
              cannot be read or sized, a missing backing file or one whose size or mtime
              differs, a V3 header that Linux 6.1's backing switch wrote over a V2 file,
              marked sectors past the end of a truncated file;
  leak        harmless to what the guest sees, but data or bits nothing will ever read: data
              written whose bit is clear (a crash between the data and the bitmap write, or two
              2.4 kernels racing on one file), bits set past the last sector;
  warning     worth knowing: the V1/V2 rounding bug, the broken 64-bit V3 layout, marked
              sectors that are holes (a 6.1 discard), a backing file that is itself a COW
              file (UML cannot stack), a relative backing path, a profile that would refuse.
--kernel P judges for one profile (2.4, 2.4-stock, 6.1): what that kernel refuses becomes a
corruption; without it, profile differences are warnings that name the profiles.

Unmarked sectors are judged by their content, not by allocation: the host allocates whole
filesystem blocks, so a lone 512-byte write leaves zero neighbours allocated, and that is
clean. Only the file's data extents are read (SEEK_DATA): a 1 TiB sparse file is quick.

What check cannot see: whether the data itself is right. A sector the guest wrote wrongly,
or one a crash left half old and half new, looks like any other data; only a comparison
with a reference can tell (`ubdsim compare`, or e2fsck inside the device).

qemu-img check on qcow2 finds the same two classes for its own metadata (leaked clusters:
allocated, unreferenced; corruptions: refcounts that disagree) but never looks at data
either, and its -r repairs can hide a lost write by dropping the leaked cluster; `ubdsim
repair` never does that (see its --help).

A COW file that another process holds locked (a running 6.1 guest) is refused unless -U
(--force-share, as qemu-img's): its contents may change while they are read.

--chain is ubdsim's own (UML cannot stack: without it, a backing file that is a COW file is
the warning backing.is_cow): every COW layer of the backing chain is checked against the
file below it (its findings, size and mtime included), down to the raw bottom, plus the
chain's own findings (chain.loop, chain.missing, chain.unusable, chain.unreadable_layer:
corruptions). The exit code is the worst layer's (corruption, then leaks, then clean).
-b does not combine with it.
"""
from __future__ import annotations

import argparse
import sys

from ..doctor.findings import EXIT_CLEAN, EXIT_CORRUPT, EXIT_LEAKS, EXIT_NOT_CHECKED
from ..fileio import shown
from ..ops.check import ChainCheckReport, CheckReport, check, check_chain
from ..profiles import PROFILES, get_profile
from .render import to_json
from .status import USAGE

EPILOG = f"""exit codes (as qemu-img check):
  {EXIT_CLEAN}    no corruption and no leak (warnings may be printed)
  1    the check could not run (unreadable file, a FIFO, locked without -U, bad arguments)
  {EXIT_CORRUPT}    corruption found
  {EXIT_LEAKS}    only leaks found
  {EXIT_NOT_CHECKED}   not a COW file (no COW magic): a raw image has nothing to check"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-b", "--backing", metavar="BACKING",
                        help="check against this backing file instead of the header's")
    parser.add_argument("--kernel", choices=list(PROFILES), default=None, metavar="P",
                        help="judge for one kernel profile (2.4, 2.4-stock, 6.1)")
    parser.add_argument("-U", "--force-share", action="store_true",
                        help="check a file another process holds locked")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own: check every layer of the backing chain")
    parser.add_argument("cow", metavar="COW", help="the COW file to check")


def report_text(report: CheckReport) -> str:
    if report.format == "raw":
        return f"{shown(report.path)}: not a COW file (no COW magic); a raw image has nothing to check"
    head = f"{shown(report.path)}: COW file"
    if report.version is not None:
        head += f" version {report.version}"
    if report.sectors is not None:
        head += f", {report.sectors} sectors, {report.marked_sectors} marked"
    lines = [head]
    for f in report.findings:
        lines.append(f"{f.severity:<10}  {f.id}: {f.text}")
        if f.repair:
            lines.append(f"{'':<10}  (ubdsim repair can fix this: {f.repair})")
    lines.append("")
    if report.corruptions:
        lines += [f"{report.corruptions} errors were found on the image.",
                  "Data may be corrupted, or further writes to the image may corrupt it."]
    if report.leaks:
        lines += [f"{report.leaks} leaks were found on the image.",
                  "This means data or bits nothing reads, but no harm to what the guest sees."]
    if not report.corruptions and not report.leaks:
        lines.append("No errors were found on the image.")
    return "\n".join(lines)


def chain_text(report: ChainCheckReport) -> str:
    if len(report.layers) == 1 and report.layers[0].format == "raw":
        return report_text(report.layers[0])          # no chain: a raw image
    layers = report.chain.get("layers", [])
    names = " -> ".join(f"'{shown(layer['path'])}'" for layer in layers)
    lines = [f"{shown(report.path)}: backing chain of {len(layers)} layers: {names} "
             "(ubdsim's --chain)"]
    for i, layer in enumerate(report.layers):
        lines += ["", f"=== layer {i} ===", report_text(layer)]
    lines.append("")
    if report.findings:
        lines.append("chain:")
        lines += [f"{f.severity:<10}  {f.id}: {f.text}" for f in report.findings]
    else:
        lines.append(f"chain: {len(report.layers)} COW layers over "
                     f"'{shown(report.bottom or '?')}', every one checked")
    lines.append(f"worst layer: exit code {report.status}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    profile = get_profile(args.kernel) if args.kernel else None
    if args.chain:
        if args.backing is not None:
            print("ubdsim check: usage: -b does not combine with --chain (each layer's header "
                  "names the one below it)", file=sys.stderr)
            return USAGE
        chained = check_chain(args.cow, profile=profile, force_share=args.force_share)
        print(to_json(chained) if args.json else chain_text(chained))
        return chained.status
    report = check(args.cow, backing=args.backing, profile=profile, force_share=args.force_share)
    print(to_json(report) if args.json else report_text(report))
    return report.status
