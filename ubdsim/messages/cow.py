"""printk texts of the COW format code.

From: `arch/um/drivers/cow_user.c` read_cow_header(), write_cow_header(), absolutize(),
init_cow_file() [6.1]; the 2.4.20 `cow_user.c` has the same texts for V1/V2.
"""
from __future__ import annotations

from . import MessageText

_BOTH = ("2.4", "6.1")


def _same(source: str, text: str, families: tuple[str, ...] = _BOTH) -> MessageText:
    return MessageText(source=source, texts={f: text for f in families})


MESSAGES: dict[str, MessageText] = {
    "cow.short_header": _same("cow_user.c read_cow_header()", "read_cow_header - short header"),
    "cow.short_v1": _same("cow_user.c read_cow_header()", "read_cow_header - failed to read V1 header"),
    "cow.short_v2": _same("cow_user.c read_cow_header()", "read_cow_header - failed to read V2 header"),
    "cow.short_v3": _same("cow_user.c read_cow_header()", "read_cow_header - failed to read V3 header",
                          ("6.1",)),
    "cow.bad_version": _same("cow_user.c read_cow_header()", "read_cow_header - invalid COW version"),
    "cow.align_zero": _same("cow_user.c read_cow_header()",
                            "read_cow_header - invalid COW header, align == 0", ("6.1",)),
    "cow.broken_v3": _same("cow_user.c read_cow_header()",
                           "read_cow_header - broken V3 file with 64-bit layout - recovering content.",
                           ("6.1",)),
    "cow.name_too_long": _same("cow_user.c write_cow_header()",
                               'Backing file name "%s" is too long - names are limited to %zd characters'),
    "cow.absolutize_cd": _same("cow_user.c absolutize()", "absolutize : Can't cd to '%s' - errno = %d"),
    "cow.absolutize_fit": _same("cow_user.c absolutize()", "absolutize : unable to fit '%s' into %d chars"),
    "cow.mtime_failed": _same("cow_user.c write_cow_header()",
                              "write_cow_header - backing file '%s' mtime request failed, err = %d"),
    "cow.size_failed": _same("cow_user.c write_cow_header()",
                             "write_cow_header - couldn't get size of backing file '%s', err = %d"),
    "cow.header_write_failed": _same("cow_user.c write_cow_header()",
                                     "write_cow_header - write of header to new COW file '%s' failed, err = %d"),
    "cow.bitmap_write_failed": _same("cow_user.c init_cow_file()",
                                     "Write of bitmap to new COW file '%s' failed, err = %d"),
}
