"""printk texts of the device code: opening, creating, switching, checking, locking, resizing.

From: `arch/um/drivers/ubd_kern.c` ubd_open(), ubd_open_dev(), open_ubd_file(),
path_requires_switch(), backing_file_mismatch(), create_cow_file(), ubd_init();
`arch/um/os-Linux/file.c` os_lock_file(), os_file_size(), os_file_modtime() [6.1].
The 6.1 texts were checked against linux.uml's log (tests/device/test_oracle_*.py).
The 2.4 texts follow the spec (2.4.20-4um): `%ld` sizes, the mismatch message broken over
two lines, and `Creation of COW file "%s" failed` where 6.1 has no such text.

Texts that are ubdsim's own (the kernel has no such line: the [resize] patch's lost or missing
messages, refusals that stand in for a kernel crash) say so in their `source`
(`..., ubdsim's text]`) and are listed in UBDSIM_TEXTS; they keep the 2.4 driver's
`ubd : ` prefix so that they read as the driver's log lines they stand in for.
"""
from __future__ import annotations

from . import MessageText

_BOTH = ("2.4", "6.1")


def _same(source: str, text: str, families: tuple[str, ...] = _BOTH) -> MessageText:
    return MessageText(source=source, texts={f: text for f in families})


# The driver's messages printed without a KERN_<LEVEL> prefix (2 more characters fit in a
# printk record, see DeviceRules.printk_text_max).
UNLEVELLED: frozenset[str] = frozenset({"device.open_failed"})

MESSAGES: dict[str, MessageText] = {
    # ubd_open_dev(): after create_cow_file() succeeded (6.1 prints it only on success).
    "device.creating": _same("ubd_kern.c ubd_open_dev()", 'Creating "%s" as COW file for "%s"'),
    "device.creation_failed": _same("ubd_kern.c ubd_open_dev() [2.4]",
                                    'Creation of COW file "%s" failed, errno = %d', ("2.4",)),
    "device.cow_open_failed": _same("ubd_kern.c create_cow_file()",
                                    "Open of COW file '%s' failed, errno = %d"),
    "device.open_failed": _same("ubd_kern.c ubd_open_dev()", "Failed to open '%s', errno = %d"),
    "device.cant_open": _same("ubd_kern.c ubd_open()", '%s: Can\'t open "%s": errno = %d', ("6.1",)),
    "device.init_failed": _same("ubd_kern.c ubd_init()", "Failed to initialize ubd device %d :%s",
                                ("6.1",)),
    "device.no_size": _same("ubd_kern.c ubd_add()", "Couldn't determine size of device's file"),
    "device.vmalloc_failed": _same("ubd_kern.c ubd_open_dev()", "Failed to vmalloc COW bitmap",
                                   ("6.1",)),
    "device.read_header_failed": _same("ubd_kern.c open_ubd_file()",
                                       'Failed to read COW header from COW file "%s", errno = %d'),
    # path_requires_switch()
    "device.couldnt_stat": _same("ubd_kern.c path_requires_switch()", "Couldn't stat '%s', err = %d",
                                 ("6.1",)),
    "device.backing_mismatch": MessageText(
        source="ubd_kern.c path_requires_switch()",
        texts={"2.4": 'Backing file mismatch - "%s" requested,\n"%s" specified in COW header of "%s"',
               "6.1": 'Backing file mismatch - "%s" requested, "%s" specified in COW header of "%s"'}),
    "device.switching": _same("ubd_kern.c open_ubd_file()", "Switching backing file to '%s'"),
    "device.switch_failed": _same("ubd_kern.c open_ubd_file()", "Switch failed, errno = %d"),
    # backing_file_mismatch()
    "device.size_mismatch": MessageText(
        source="ubd_kern.c backing_file_mismatch()",
        texts={"2.4": "Size mismatch (%ld vs %ld) of COW header vs backing file",
               "6.1": "Size mismatch (%llu vs %llu) of COW header vs backing file"}),
    "device.mtime_mismatch": MessageText(
        source="ubd_kern.c backing_file_mismatch()",
        texts={"2.4": "mtime mismatch (%ld vs %ld) of COW header vs backing file",
               "6.1": "mtime mismatch (%lld vs %lld) of COW header vs backing file"}),
    "device.no_modtime": _same("ubd_kern.c backing_file_mismatch()",
                               'Failed to get modification time of backing file "%s", err = %d'),
    "device.no_backing_size": _same("ubd_kern.c backing_file_mismatch()",
                                    'Failed to get size of backing file "%s", err = %d'),
    "device.stat_failed": _same("os-Linux/file.c os_file_size()/os_file_modtime()",
                                'Couldn\'t stat "%s" : err = %d'),
    # open_ubd_file() / os_lock_file() [6.1]
    "device.not_locking": _same("ubd_kern.c open_ubd_file()", 'Not locking "%s" on the host', ("6.1",)),
    "device.already_locked": _same("os-Linux/file.c os_lock_file()",
                                   "F_SETLK failed, file already locked by pid %d", ("6.1",)),
    "device.lock_failed": _same("ubd_kern.c open_ubd_file()", "Failed to lock '%s', err = %d", ("6.1",)),
    # [resize] the 2003 COW-resize patch (its demo's text)
    "device.resizing": _same("ubd_kern.c [resize patch]", "*** Resizing cow file: %llu -> %llu", ("2.4",)),
    "device.resize_smaller": _same("ubd_kern.c [resize patch, ubdsim's text]",
                                   "ubd : can't shrink cow file \"%s\" from %llu to %llu bytes",
                                   ("2.4",)),
    # A grow asked of a read-only unit (flag r, or the EROFS/EACCES fallback to read-only).
    "device.resize_readonly": _same("ubd_kern.c [resize patch, ubdsim's text]",
                                    "ubd : can't grow read-only cow file \"%s\" from %llu to %llu bytes",
                                    ("2.4",)),
    # The grow itself failed (ENOSPC, EFBIG under `ulimit -f`, EIO...): nothing was changed.
    "device.resize_failed": _same("ubd_kern.c [resize patch, ubdsim's text]",
                                  "ubd : growing cow file \"%s\" from %llu to %llu bytes failed: "
                                  "%s (errno = %d)", ("2.4",)),
    # ubdsim's own guard (the patch had none): its rename would split the hard links.
    "device.resize_linked": _same("ubd_kern.c [resize patch, ubdsim's text]",
                                  "ubd : not growing cow file \"%s\": it has %d hard links, "
                                  "a grown copy would split them", ("2.4",)),
    "device.resize_not_regular": _same("ubd_kern.c [resize patch, ubdsim's text]",
                                       "ubd : not growing cow file \"%s\": not a regular file",
                                       ("2.4",)),
    # cow_sizes() divides by the header's sector size: 0 makes both kernels die of a divide
    # error in open_ubd_file(); ubdsim refuses the unit with this line instead.
    "device.bad_sectorsize": MessageText(
        source="cow_user.c cow_sizes() [ubdsim's text: the kernel divides by zero]",
        texts={"2.4": "ubd : cow file \"%s\" has sector size %d in its header, refusing it",
               "6.1": "ubd: cow file \"%s\" has sector size %d in its header, refusing it"}),
}

# The ids above whose text is ubdsim's, not the kernel's (see the module docstring).
UBDSIM_TEXTS: frozenset[str] = frozenset(
    msg_id for msg_id, message in MESSAGES.items() if "ubdsim's text" in message.source)
