"""Scenarios on which ubdsim is known to disagree with linux.uml, and why.

This is a to-do list, not an excuse: every scenario still runs and is compared, `python -m
kernel_ref run` still counts these as disagreeing, and the pytest suite fails both when a
scenario outside this table disagrees (a regression) and when one inside it agrees (a fix:
remove its row). Each reason names the kernel behaviour ubdsim does not reproduce yet, or
the part of the comparison that is at fault.
"""
from __future__ import annotations

# os-Linux/file.c os_file_size()/os_file_modtime() [6.1] print `Couldn't stat "F" : err = N`
# (UM_KERN_ERR): linux.uml's console has the line (see any `--keep` console, and
# tests/cmdline/data/oracle_6_1.json) and ubdsim prints it byte for byte, but
# kernel_ref/filters.py has no `Couldn't stat "` prefix, so the kernel side (and the golden
# captures) drop it. Fix: add the prefix there and recapture these goldens.
_FILTER = ("kernel_ref's log filter drops the kernel's `Couldn't stat \"F\" : err = N` line "
           "(os_file_size/os_file_modtime); ubdsim prints it as linux.uml does")

KNOWN_GAPS: dict[str, str] = {
    "create-missing-backing": _FILTER,
    "relocation-header-path-missing-no-candidate": _FILTER,
    "relocation-moved-and-touched": _FILTER,
    "raw-magic-planted-between-boots": _FILTER + "; the garbage path spans 55 console lines "
                                       "(identical in ubdsim's log, byte for byte), whose "
                                       "continuation lines the filter drops as well",
    "io-buffered-read-after-partial-cow-page": "the kernel's readahead reads pages 0-3 as ONE "
                                               "16 KiB request (do_io() offset drift after the "
                                               "mixed first page); the harness page cache "
                                               "sends each bs=512 read to the device alone",
}
