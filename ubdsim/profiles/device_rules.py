"""How each kernel opens and serves a unit (owned by the device work, issue 4).

From: `arch/um/drivers/ubd_kern.c` open_ubd_file(), ubd_file_size(), update_bitmap(),
do_io() [6.1]; 2.4.20-4um ubd_kern.c for the 2.4 rows.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceRules:
    resize_patch: bool           # [resize]: third field grows the device (2.4 + patch only)
    takes_locks: bool            # 6.1: fcntl(F_SETLK) on every file opened


DEVICE_2_4_RESIZE = DeviceRules(resize_patch=True, takes_locks=False)
DEVICE_2_4_STOCK = DeviceRules(resize_patch=False, takes_locks=False)
DEVICE_6_1 = DeviceRules(resize_patch=False, takes_locks=True)
