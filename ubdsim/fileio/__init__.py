"""Host files as ubdsim's tools read, write and name them: the one place their safety rules live.

It owns the primitives (whole writes, durable renames, extent walks over holes), new files
built beside their target and published whole (with the leftovers of killed builds swept
away), the guards every tool passes before it opens or replaces a file (only regular files
and block devices hold images; never write over an input, through a planted symlink, or a
log into an image), and how a file name is shown to people (as `ls -b` shows it). The
kernel-faithful device model does not use the guards: it reproduces what the kernel does,
damage included.
"""
from __future__ import annotations

from .guard import (DISK_KINDS, create_private, is_disk_kind, kind_name, open_disk_file,
                    open_log, open_own_regular, refuse_non_disk, refuse_same_file, same_file)
from .names import shown
from .newfile import CREATE_MODE, TEMP_SUFFIX, new_file_beside, sweep_stale_temps
from .rewrite import rewrite_beside
from .writes import copy_range, data_extents, fsync_directory, pwrite_all

__all__ = ["CREATE_MODE", "DISK_KINDS", "TEMP_SUFFIX", "copy_range", "create_private", "data_extents",
           "fsync_directory", "is_disk_kind", "kind_name", "new_file_beside", "open_disk_file",
           "open_log", "open_own_regular", "pwrite_all", "refuse_non_disk", "refuse_same_file",
           "rewrite_beside", "same_file", "shown", "sweep_stale_temps"]
