"""Run many guests over one backing file and show how much the host really holds.

  ubdsim fleet N BACKING [--size SIZE] [--workload CMD] [--dir D] [--jobs J] [--kernel P] [--json]

Makes N COW files D/guest1.cow .. D/guestN.cow over BACKING (a missing BACKING is created
sparse, of --size; an existing one must have that size, or leave --size out), and runs the
workload of each guest through the simulator, J at a time (default: one per CPU):

  ubdsim run --kernel P ubd0=D/guestK.cow,BACKING -- sh -c CMD

with {dev} in CMD replaced by the guest's device (/dev/ubd0 under 2.4, /dev/ubda under 6.1)
and {n} by its number K. Each guest's output (the kernel's lines, then the workload's) goes
to D/guestK.log. The default workload writes 64 KiB of random data at a different place of
each disk (dd ... bs=4k count=16 seek=$(( {n} * 37 ))); `--workload 'mkfs.ext4 -q {dev}'`
puts a filesystem on each.

Then it reports, from st_size, st_blocks (each COW file fsynced first) and statvfs():
apparent and allocated bytes per guest and in all; the overbooking ratio (the COW files'
apparent sizes over the size of the host filesystem holding them); the host space left; the
worst case, every guest filling its disk (how many could before the host is full); and what
a guest sees when the host fills: under linux.uml 6.1 its buffered writes succeed and the
data is lost ('Buffer I/O error ... lost async page write'), under `ubdsim run` today the
write fails at once with ENOSPC (a known difference: ubdsim does not model write-back yet,
tracked by the lab issue).

SIZE is bytes, or a number with K, M, G or T (powers of 1024, as truncate -s reads them).
Guest files that exist already are refused (nothing is made); a progress bar is shown when
stderr is a terminal; --json prints the report as one JSON object.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

from ..fileio import new_file_beside, refuse_same_file, shown
from ..ops.fleet import DEFAULT_WORKLOAD, FleetReport, run_fleet
from ..profiles import UnknownProfile, get_profile
from .argtypes import int_range
from .progress import ProgressBar
from .render import human_bytes, to_json
from .status import ERROR, OK, USAGE

EPILOG = """exit codes:
  0    every guest's workload exited 0
  1    bad input (one line on stderr, nothing made), or some guest failed (the report is
       printed, then one line naming the failed guests)
  2    usage error in ubdsim's own arguments
  130  interrupted (SIGINT; 143: SIGTERM): the running guests are stopped"""

_SIZE = re.compile(r"(\d+)([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}


def size_argument(text: str) -> int:
    """`4G` -> 4 GiB; plain digits are bytes."""
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"must be a size greater than 0 (bytes, or a number with K, M, G or T), not {text!r}")
    return int(match.group(1)) << _SHIFT[match.group(2).upper()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("count", metavar="N", type=int_range(1), help="how many guests")
    parser.add_argument("backing", metavar="BACKING", help="the backing file all guests share")
    parser.add_argument("--size", type=size_argument, default=None,
                        help="the disk size (creates a missing BACKING sparse of this size)")
    parser.add_argument("--workload", metavar="CMD", default=DEFAULT_WORKLOAD,
                        help="shell command each guest runs; {dev} = its device, {n} = its "
                             f"number (default: {DEFAULT_WORKLOAD!r})")
    parser.add_argument("--dir", metavar="D", default=".",
                        help="where the COW files and logs go (default: .)")
    parser.add_argument("--jobs", metavar="J", type=int_range(1), default=None,
                        help="guests run at once (default: the number of CPUs)")
    parser.add_argument("--kernel", default=None, metavar="P",
                        help="kernel profile: 2.4 (default), 2.4-stock or 6.1")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--png", metavar="F", default=None,
                        help="also draw the report into F: per guest apparent vs allocated, and "
                             "the disks promised against the host's size")


class GuestBar(ProgressBar):
    """The progress bar counting guests, not MiB."""

    def describe(self, done: int, total: int) -> str:
        return f"{done} of {total} guests"


def _protected(args: argparse.Namespace) -> dict[str, str]:
    """The files the fleet makes or reads, which the picture must never replace."""
    files = {f"guest {n}'s COW file": os.path.join(args.dir, f"guest{n}.cow")
             for n in range(1, args.count + 1)}
    files["backing file"] = args.backing
    return files


def _draw(report: FleetReport, target: str) -> None:
    """The picture, published whole (a temporary beside F, renamed)."""
    from ..show.figure import save
    from ..show.fleet_figure import draw_fleet
    with new_file_beside(target, exclusive=False) as fd:
        with os.fdopen(os.dup(fd), "wb") as out:
            save(draw_fleet(report), out, "png")


def run(args: argparse.Namespace) -> int:
    try:
        get_profile(args.kernel)
    except UnknownProfile as err:
        print(f"ubdsim fleet: error: {err}", file=sys.stderr)
        return USAGE
    if args.png:
        refuse_same_file(args.png, _protected(args), "draw a picture over")
    bar = GuestBar("guests")
    try:
        report = run_fleet(args.count, args.backing, size=args.size, workload=args.workload,
                           directory=args.dir, jobs=args.jobs, kernel=args.kernel, progress=bar)
    finally:
        bar.close()
    print(to_json(report) if args.json else fleet_text(report))
    if args.png:
        _draw(report, args.png)
    for warning in report.warnings:
        print(f"ubdsim fleet: warning: {warning}", file=sys.stderr)
    if report.failed:
        bad = [g for g in report.guests if g.status]
        first = bad[0]
        see = f"; see {shown(first.log)}" if first.log else ""
        print(f"ubdsim fleet: error: {report.failed} of {len(report.guests)} guests failed "
              f"(guest {first.number}: exit status {first.status}: "
              f"{first.error or 'no output'}{see})", file=sys.stderr)
        return ERROR
    return OK


def fleet_text(r: FleetReport) -> str:
    created = ", created sparse" if r.backing_created else ""
    lines = [f"fleet: {len(r.guests)} guests over {shown(r.backing)} ({human_bytes(r.size)}"
             f"{created}), kernel {r.kernel}, device {r.device}, {r.jobs} at a time, "
             f"in {r.seconds:.1f} s",
             f"workload: {r.workload}", "",
             f"{'guest':>6}  {'status':>6}  {'apparent':>10}  {'allocated':>10}  {'marked':>9}  "
             f"{'seconds':>7}  {'max RSS':>10}"]
    for g in r.guests:
        lines.append(f"{g.number:>6}  {g.status:>6}  {human_bytes(g.apparent_bytes):>10}  "
                     f"{human_bytes(g.allocated_bytes):>10}  {g.sectors_marked:>9}  "
                     f"{g.seconds:>7.2f}  {human_bytes(g.max_rss_bytes):>10}")
    host, worst, fills = r.host, r.worst_case, r.when_host_fills
    where = "" if r.backing_on_same_filesystem else " (the backing file is on another filesystem)"
    lines += [
        "",
        f"in all: {len(r.guests)} COW files, {human_bytes(r.cow_apparent_bytes)} apparent, "
        f"{human_bytes(r.cow_allocated_bytes)} allocated ({r.cow_allocated_bytes} bytes); the "
        f"backing file {human_bytes(r.backing_apparent_bytes)} apparent, "
        f"{human_bytes(r.backing_allocated_bytes)} allocated{where}",
        f"overbooking: {r.overbooking:.3g} ({human_bytes(r.cow_apparent_bytes)} of COW files "
        f"on a {human_bytes(host.filesystem_bytes)} filesystem)",
        f"host space left: {human_bytes(host.left_bytes)} ({host.left_bytes} bytes, statvfs "
        f"{host.left_basis}, df's Avail; {human_bytes(host.free_bytes)} free with the reserved "
        f"blocks) on the filesystem of {shown(host.path)}",
        f"worst case, every guest fills its disk ({len(r.guests)} x {human_bytes(r.size)} = "
        f"{human_bytes(worst.disks_bytes)}): {human_bytes(worst.need_bytes)} more needed, "
        f"{human_bytes(worst.left_bytes)} left: "
        + (f"all {len(r.guests)} guests fit" if worst.fits else
           f"{worst.guests_that_fit} of {len(r.guests)} guests could fill their disks before "
           f"the host is full (short by {human_bytes(worst.shortfall_bytes)})"),
        "when the host fills, a guest sees:",
        f"  {fills.kernel}",
        f"  {fills.ubdsim}" + (f"; a known difference, tracked by {fills.tracked_by}"
                              if fills.known_difference else ""),
    ]
    if fills.profile_note:
        lines.append(f"  ({fills.profile_note})")
    return "\n".join(lines)
