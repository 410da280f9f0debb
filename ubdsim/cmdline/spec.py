"""What the command-line parser produces for one unit: the contract between the parser and
everything that opens units (device model, guest harness, NBD server).

From: `arch/um/drivers/ubd_kern.c` struct ubd fields set by ubd_setup_common() [6.1]
(file, backing_file, serial, boot_openflags, no_cow, shared, no_trim); 2.4.20's struct ubd
(file, cow.file, openflags) plus the [resize] patch's size.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UnitSpec:
    """One configured ubd unit, exactly as the parser left it."""

    unit: int
    file: str                    # the COW file, or the raw file when there is no backing
    backing: str | None = None   # backing file (2.4-stock: everything after the first comma)
    size: int | None = None      # [resize] third field, bytes (memparse'd)
    serial: str | None = None    # 6.1 third field
    readonly: bool = False       # flag r
    sync: bool = False           # flag s, or ubd=sync before this unit
    no_cow: bool = False         # 6.1 flag d: never probe for a COW header
    shared: bool = False         # 6.1 flag c: take no host locks
    no_trim: bool = False        # 6.1 flag t: no discard
