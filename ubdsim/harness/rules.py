"""The few kernel-era differences the harness itself applies, read from the profile row.

Only ubdsim/profiles/ may know eras, so this module names no kernel: each field is copied by
the same name from `profile.device` (the device rule record, where each is documented).
The defaults are the behaviour observed with linux.uml 6.1.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class HarnessRules:
    # Largest soft block (page-cache buffer) size of a block device: buffered writes reach
    # the driver in whole blocks of this size when the device size allows.
    soft_block_max: int = 4096
    # ubd_kern.c ubd_open(): opening a read-only unit for writing fails with EROFS.
    write_open_of_readonly_fails: bool = False

    @classmethod
    def from_profile(cls, profile) -> "HarnessRules":
        row = profile.device
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})
