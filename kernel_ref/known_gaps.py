"""Scenarios on which ubdsim is known to disagree with linux.uml, and why.

This is a to-do list, not an excuse: every scenario still runs and is compared, `python -m
kernel_ref run` still counts these as disagreeing, and the pytest suite fails both when a
scenario outside this table disagrees (a regression) and when one inside it agrees (a fix:
remove its row). Each reason names the kernel behaviour ubdsim does not reproduce yet, or
the part of the comparison that is at fault.
"""
from __future__ import annotations

KNOWN_GAPS: dict[str, str] = {
    "raw-magic-planted-between-boots": "kernel_ref's filter, not ubdsim: the path printed by "
                                       "`Couldn't stat \"%s\" : err = %d` is sector data and "
                                       "spans 55 console lines; the kernel-side filter keeps "
                                       "only the first (it cannot tell where a message whose "
                                       "text came from the disk ends), while ubdsim's --log "
                                       "holds all 55, identical to the console byte for byte",
}
