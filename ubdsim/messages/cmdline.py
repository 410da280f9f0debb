"""printk texts of the `ubd`/`udb` option parsers (owned by the cmdline work).

[6.1] texts are copied from Debian's `arch/um/drivers/ubd_kern.c` and checked line for line
against linux.uml's boot log (tests/cmdline). [2.4] texts are the 2.4.20-4um driver's as listed
in ubd-behaviour.md section 2; `cmdline.bad_size` is ubdsim's own text for the [resize] patch,
whose original message is lost (the spec lets ubdsim choose it, prefixed `ubd_setup : `).
`cmdline.too_long` is not a printk but add_arg()'s line before the kernel starts: [6.1] from
`arch/um/kernel/um_arch.c`, checked against linux.uml's stderr
(tests/cmdline/test_command_line_size.py); [2.4] from the 2.4-era `arch/um/kernel/user_util.c`.
"""
from __future__ import annotations

from . import MessageText


def _only(family: str, source: str, text: str) -> MessageText:
    return MessageText(source=source, texts={family: text})


MESSAGES: dict[str, MessageText] = {
    # --- before the kernel starts: linux_main() -> add_arg() refuses a too long command line.
    # Not a printk (no log level, never in the kernel log): [6.1] os_warn() to stderr,
    # [2.4] printf() to stdout (CmdlineRules.too_long_stream), then exit(1). The 2.4 text was
    # reworded after 2.6.11 (patch "uml-correct-message").
    "cmdline.too_long": MessageText(
        source="um_arch.c add_arg() [6.1] / user_util.c add_arg() [2.4]",
        texts={"2.4": "add_arg: Too much command line!",
               "6.1": "add_arg: Too many command line arguments!"}),

    # --- printed at driver init, but decided by the command line (ubd=sync) ---
    "cmdline.sync_mode": MessageText(
        source="ubd_kern.c ubd_init() [2.4] / ubd_driver_init() [6.1]",
        texts={"2.4": "ubd : Synchronous mode", "6.1": "ubd: Synchronous mode"}),

    # --- [2.4] ubd_setup(): each check prints its own line ---
    "cmdline.bad_major": _only("2.4", "ubd_kern.c ubd_setup()", "ubd_setup : didn't parse major number"),
    "cmdline.major_twice": _only("2.4", "ubd_kern.c ubd_setup()", "Can't assign a fake major twice"),
    "cmdline.fake_major": _only("2.4", "ubd_kern.c ubd_setup()", "Setting extra ubd major number to %d"),
    "cmdline.below_zero": _only("2.4", "ubd_kern.c ubd_setup()", "ubd_setup : index out of range"),
    "cmdline.syntax_invalid": _only("2.4", "ubd_kern.c ubd_setup()", "ubd_setup : device syntax invalid"),
    "cmdline.index_range": _only("2.4", "ubd_kern.c ubd_setup()",
                                 "ubd_setup : index out of range (%d devices)"),
    "cmdline.configured": _only("2.4", "ubd_kern.c ubd_setup()", "ubd_setup : device already configured"),
    "cmdline.expected_eq": _only("2.4", "ubd_kern.c ubd_setup()", "ubd_setup : Expected '='"),
    "cmdline.bad_size": _only("2.4", "ubd_kern.c ubd_setup() [resize, ubdsim's text]",
                              "ubd_setup : couldn't parse size '%s'"),

    # --- [6.1] ubd_setup() prints ubd_setup_common()'s *error_out ---
    "cmdline.setup_failed": _only("6.1", "ubd_kern.c ubd_setup()",
                                  'Failed to initialize device with "%s" : %s'),
    "cmdline.fake_major_gone": _only("6.1", "ubd_kern.c ubd_setup_common()",
                                     "fake major not supported any more"),
    "cmdline.udb_typo": _only("6.1", "ubd_kern.c udb_setup()",
                              "udb%s specified on command line is almost certainly a ubd -> udb TYPO"),
    # *error_out strings of ubd_setup_common() [6.1]: the second %s of cmdline.setup_failed
    "cmdline.err.unit": _only("6.1", "ubd_kern.c ubd_setup_common()", "Couldn't parse device number"),
    "cmdline.err.range": _only("6.1", "ubd_kern.c ubd_setup_common()", "Device number out of range"),
    "cmdline.err.configured": _only("6.1", "ubd_kern.c ubd_setup_common()", "Device is already configured"),
    "cmdline.err.flag": _only("6.1", "ubd_kern.c ubd_setup_common()",
                              "Expected '=' or flag letter (r, s, c, t or d)"),
    "cmdline.err.too_many_flags": _only("6.1", "ubd_kern.c ubd_setup_common()", "Too many flags specified"),
    "cmdline.err.missing_eq": _only("6.1", "ubd_kern.c ubd_setup_common()", "Missing '='"),
    "cmdline.err.d_and_cow": _only("6.1", "ubd_kern.c ubd_setup_common()",
                                   "Can't specify both 'd' and a cow file"),
}

# printk calls whose format starts with a KERN_<level> (2 bytes, "\\0013"): printk formats the
# prefix into the same bounded buffer, then strips it, so these texts are cut 2 bytes earlier.
# [6.1] ubd_setup() uses KERN_ERR, pr_warn() is KERN_WARNING, udb_setup() has no level.
HAS_LOG_LEVEL: frozenset[str] = frozenset({"cmdline.setup_failed", "cmdline.fake_major_gone",
                                          "cmdline.sync_mode"})
