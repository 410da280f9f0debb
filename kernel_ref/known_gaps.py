"""Scenarios on which ubdsim is known to disagree with linux.uml, and why.

This is a to-do list, not an excuse: every scenario still runs and is compared, `python -m
kernel_ref run` still counts these as disagreeing, and the pytest suite fails both when a
scenario outside this table disagrees (a regression) and when one inside it agrees (a fix:
remove its row). Each reason names the kernel behaviour ubdsim does not reproduce yet.
"""
from __future__ import annotations

# ubd_kern.c ubd_open() [6.1]: while a unit's open count is 0, every open (the partition
# scan at boot, then each guest open) calls ubd_open_dev() again: messages are printed
# again, locks retaken, header and bitmap reread; a failed open prints
# `ubdX: Can't open "F": errno = N` each time. ubdsim opens each unit once at boot.
_REOPEN = "6.1 reopens the unit on every first open (ubd_open -> ubd_open_dev); ubdsim opens once"

KNOWN_GAPS: dict[str, str] = {
    "create-readonly-unit": _REOPEN,
    "create-missing-backing": _REOPEN,
    "create-in-missing-directory": _REOPEN,
    "create-empty-backing": "vmalloc(0) of an empty bitmap fails with ENOMEM in 6.1 "
                            "(`Failed to vmalloc COW bitmap`); ubdsim opens a 0-byte device",
    "flag-c-shared": _REOPEN,
    "flags-combined-any-order": _REOPEN,
    "v2-rounding-bug-last-sectors": "bits past a V1/V2 bitmap live only in kernel memory and are "
                                    "lost on reopen; ubdsim keeps them for the whole run",
    "v1-rounding-bug-last-sectors": "as v2-rounding-bug-last-sectors",
    "v3-broken-layout": _REOPEN,
    "bad-version-with-backing": _REOPEN,
    "short-header-with-backing": _REOPEN,
    "truncated-v3-header": _REOPEN,
    "not-cow-with-backing": _REOPEN,
    "resized-cow-refused": _REOPEN,
    "resized-cow-alone": _REOPEN,
    "io-buffered-read-after-partial-cow-page": "do_io() advances req->offset by the last run only; "
                                               "ubdsim reproduces it for large requests but not for "
                                               "the page-cache readahead of bs=512 reads",
    "lock-cow-write-locked": _REOPEN,
    "lock-cow-read-locked": _REOPEN,
    "lock-backing-write-locked": _REOPEN,
    "lock-raw-write-locked": _REOPEN,
    "raw-bad-version-magic": _REOPEN,
    "raw-short-file": _REOPEN,
    "raw-magic-planted-between-boots": "ubdsim prints a `Couldn't stat` line the kernel does not "
                                       "print on this path",
    "readonly-create-in-ro-dir": _REOPEN,
    "readonly-immutable-no-fallback": _REOPEN,
    "relocation-size-mismatch": _REOPEN,
    "relocation-mtime-mismatch": _REOPEN,
    "relocation-header-path-missing-no-candidate": _REOPEN,
    "relocation-moved-and-touched": _REOPEN,
}
