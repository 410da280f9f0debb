"""How each kernel parses `ubd` options (owned by the command-line work, issue 3).

From: `arch/um/drivers/ubd_kern.c` ubd_setup_common(), ubd_setup(), udb_setup().
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CmdlineRules:
    max_units: int
    third_field: str | None      # "size" ([resize]), "serial" (6.1) or None (2.4-stock)


CMDLINE_2_4_RESIZE = CmdlineRules(max_units=8, third_field="size")
CMDLINE_2_4_STOCK = CmdlineRules(max_units=8, third_field=None)
CMDLINE_6_1 = CmdlineRules(max_units=16, third_field="serial")
