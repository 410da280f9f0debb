"""The command-line option of the hints, cheap to import (argparse only): commands add it at
parser-building time without loading the device model."""
from __future__ import annotations

import argparse


def add_hint_options(parser: argparse.ArgumentParser) -> None:
    """`--quiet-hints`, for every command that boots units (`ubdsim run`, `serve`, `vm`);
    `args.quiet_hints` is True when hints are off."""
    parser.add_argument("--quiet-hints", action="store_true", default=False,
                        help="do not print `ubdsim: hint: ...` lines (ubdsim's own advice when "
                             "the kernel refuses a unit or damages a file; the kernel's lines "
                             "are printed either way)")


__all__ = ["add_hint_options"]
