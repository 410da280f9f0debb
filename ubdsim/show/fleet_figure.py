"""The fleet picture (`ubdsim fleet --png F`): what each guest's disk promises against what
the host really holds, and the host's size beside the sum of the promises.

Two panels from a FleetReport: per guest, apparent vs allocated bytes on a log scale (the
gap between them is the overbooking a sparse COW file makes possible); in all, the disks
promised, the bytes allocated, the host filesystem and the space left, on one linear scale.
Drawn with matplotlib Figure objects and saved through figure.save(), like `ubdsim show`.
"""
from __future__ import annotations

from matplotlib.figure import Figure

from ..cli.render import human_bytes
from ..ops.fleet import FleetReport
from .figure import DPI

APPARENT, ALLOCATED, HOST, LEFT = "#9ecae1", "#d62728", "#636363", "#31a354"
GIB = 1 << 30


def draw_fleet(report: FleetReport, width: int = 1200) -> Figure:
    figure = Figure(figsize=(width / DPI, 700 / DPI), dpi=DPI)
    guests, totals = figure.subplots(2, 1, gridspec_kw={"height_ratios": [3, 2]})
    numbers = [g.number for g in report.guests]
    guests.bar(numbers, [g.apparent_bytes for g in report.guests], color=APPARENT, label="apparent")
    guests.bar(numbers, [max(g.allocated_bytes, 1) for g in report.guests], color=ALLOCATED,
               label="allocated")
    guests.set_yscale("log")
    guests.set_xlabel("guest")
    guests.set_ylabel("bytes (log scale)")
    allocated = sorted(g.allocated_bytes for g in report.guests)
    median = allocated[len(allocated) // 2] if allocated else 0
    guests.set_title(f"{len(report.guests)} guests over one backing file: each disk "
                     f"{human_bytes(report.size)} apparent, {human_bytes(median)} allocated (median)")
    guests.legend(loc="center right")
    bars = {"disks promised": (report.cow_apparent_bytes, APPARENT),
            "allocated (COWs + backing)": (report.allocated_bytes, ALLOCATED),
            "host filesystem": (report.host.filesystem_bytes, HOST),
            "host space left": (report.host.left_bytes, LEFT)}
    names = list(bars)
    totals.barh(names, [bars[n][0] / GIB for n in names], color=[bars[n][1] for n in names])
    totals.invert_yaxis()
    totals.set_xlabel("GiB")
    totals.set_title(f"overbooking {report.overbooking:.2f}: {report.worst_case.guests_that_fit} of "
                     f"{len(report.guests)} guests could fill their disks before the host is full")
    figure.tight_layout()
    return figure


__all__ = ["draw_fleet"]
