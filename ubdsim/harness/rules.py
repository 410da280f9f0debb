"""The few kernel-era differences the harness itself applies, read from the profile row.

Only ubdsim/profiles/ may know eras, so this module names no kernel: each field is looked up
by the same name on `profile.device` (the device rule record); a row that does not carry the
field yet gets the default, which is the behaviour observed with linux.uml 6.1.
"""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class HarnessRules:
    # Largest soft block (page-cache buffer) size of a block device: buffered writes reach
    # the driver in whole blocks of this size when the device size allows (block/bdev.c
    # set_init_blocksize() [6.1]: 4096, a page).
    soft_block_max: int = 4096
    # ubd_kern.c ubd_open(): opening a read-only unit for writing fails with EROFS in the
    # kernels that still have that test ([6.1] has it commented out: writes get EPERM).
    write_open_of_readonly_fails: bool = False

    @classmethod
    def from_profile(cls, profile) -> "HarnessRules":
        row = profile.device
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls) if hasattr(row, f.name)})
