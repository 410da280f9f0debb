"""How each kernel parses `ubd` options (owned by the command-line work, issue 3).

From: `arch/um/drivers/ubd_kern.c` ubd_setup_common(), ubd_setup(), udb_setup(), parse_unit()
[6.1]; the 2.4.20-4um ubd_setup() as described in ubd-behaviour.md section 2 [2.4];
`init/main.c` parse_options() [2.4] and `kernel/params.c` parse_args() + `lib/cmdline.c`
next_arg() [6.1] for how the command line is cut into options; `arch/um/kernel/um_arch.c`
linux_main()/add_arg()/uml_checksetup() for how argv becomes that command line and when it is
too long (6.1: add_arg() in um_arch.c, COMMAND_LINE_SIZE from arch/um/include/asm/setup.h;
2.4: add_arg() in arch/um/kernel/user_util.c, COMMAND_LINE_SIZE = _POSIX_ARG_MAX there).

Every difference between kernels is a field here, so a new kernel (2.4.26, 2.6) is a new row;
`ubdsim.cmdline` only asks the row. The few places where the two drivers' control flow really
differs are named by `setup_style` and `splitter`, each the key of one small function.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CmdlineRules:
    max_units: int               # MAX_DEV: 8 in 2.4, 16 in 6.1
    third_field: str | None      # "size" ([resize]), "serial" (6.1) or None (2.4-stock)
    splitter: str                # "parse_options" (2.4 init/main.c) | "parse_args" (6.1
                                 # kernel/params.c: quotes stripped, "--" hands the rest to init)
    setup_style: str             # "ubd_setup_2_4" (prints as it goes) | "error_out_6_1"
                                 # (ubd_setup_common() sets *error_out, ubd_setup() prints it)
    unit_syntax: str             # "one_char" (2.4: '0'-'9' or 'a'-'z') | "strtoul_or_letter" (6.1)
    flag_letters: str            # flag characters allowed between the unit and '='
    flags_in_order: bool         # 2.4: optional 'r' then optional 's', nothing else
    max_flag_chars: int | None   # 6.1: sizeof("rscdt=") - 1 = 6 flag characters at most
    separators: bytes            # what splits file/backing/third field (2.4: ',' ; 6.1: ',' or ':')
    value_fields: int            # how many fields the value is cut into: 2 (file, backing) or 3
    last_field_keeps_rest: bool  # 2.4: the last field runs to the end (strchr), commas included;
                                 # 6.1: strsep() cuts it too and anything after is ignored
    empty_fields_absent: bool    # 6.1: an empty file/backing/serial is NULL; 2.4 keeps ""
    fake_major: str              # "assign" (2.4: ubd=<n>) | "unsupported" (6.1: only a warning)
    udb_typo_catcher: bool       # 6.1 __setup("udb", udb_setup)
    printk_text_max: int | None  # 6.1 printk: a record keeps at most LOG_LINE_MAX - 1 = 991
                                 # bytes, KERN_<level> prefix included (None: not modelled)
    # --- linux_main()/add_arg(): argv[1..] joined into the command line, or refused ---
    command_line_size: int       # add_arg() refuses a word when strlen(line) + strlen(word) + 1
                                 # > COMMAND_LINE_SIZE (the separating space is not counted)
    default_root: bytes          # linux_main() appends it when no word starts with "root="
    default_console: bytes | None  # [6.1] appended when no word starts with "console="
    swallowed_prefixes: tuple[bytes, ...]  # __uml_setup() handlers that always clear *add:
                                 # such words never reach the command line (nor count)
    umid_swallowed: str          # "always" (2.4 set_umid_arg() clears *add every time) |
                                 # "until_set" (6.1: once a umid is set, later umid= are added)
    umid_max_len: int            # UMID_LEN - 1: a longer umid is refused (6.1: -E2BIG, not set)
    too_long_stream: str         # where add_arg()'s line goes: "stderr" (6.1 os_warn()) |
                                 # "stdout" (2.4 printf())
    too_long_status: int         # add_arg(): exit(1), before the kernel starts


CMDLINE_2_4_RESIZE = CmdlineRules(
    max_units=8, third_field="size", splitter="parse_options", setup_style="ubd_setup_2_4",
    unit_syntax="one_char", flag_letters="rs", flags_in_order=True, max_flag_chars=None,
    separators=b",", value_fields=3, last_field_keeps_rest=True,
    empty_fields_absent=False, fake_major="assign",
    udb_typo_catcher=False,
    printk_text_max=None,
    # 2.4-era arch/um/kernel/user_util.c add_arg(): `#define COMMAND_LINE_SIZE _POSIX_ARG_MAX`
    # (4096, glibc limits.h), same test as 6.1, printf() to stdout, exit(1); um_arch.c
    # linux_main() appends DEFAULT_COMMAND_LINE "root=/dev/ubd0" (no default console yet);
    # umid.c set_umid_arg(), xterm.c xterm_setup() and trap_user.c uml_debug_setup() ("debug")
    # clear *add.
    command_line_size=4096, default_root=b"root=/dev/ubd0", default_console=None,
    swallowed_prefixes=(b"xterm=", b"debug"), umid_swallowed="always", umid_max_len=63,
    too_long_stream="stdout", too_long_status=1)

# Without the resize patch the value has two fields: `,400M` stays part of the backing name.
CMDLINE_2_4_STOCK = replace(CMDLINE_2_4_RESIZE, third_field=None, value_fields=2)

CMDLINE_6_1 = CmdlineRules(
    max_units=16, third_field="serial", splitter="parse_args", setup_style="error_out_6_1",
    unit_syntax="strtoul_or_letter", flag_letters="rscdt", flags_in_order=False, max_flag_chars=6,
    separators=b",:", value_fields=3, last_field_keeps_rest=False,
    empty_fields_absent=True, fake_major="unsupported",
    udb_typo_catcher=True,
    printk_text_max=991,
    # um_arch.c add_arg(): COMMAND_LINE_SIZE 4096 (arch/um/include/asm/setup.h), os_warn() to
    # stderr, exit(1); linux_main() appends DEFAULT_COMMAND_LINE_ROOT "root=98:0" and
    # DEFAULT_COMMAND_LINE_CONSOLE "console=tty0"; xterm.c xterm_setup() clears *add, umid.c
    # set_umid_arg() only while no umid is set. Measured with linux.uml: a 4096-byte line boots
    # (add_arg() lets the NUL land one byte past its buffer), one byte more is refused.
    command_line_size=4096, default_root=b"root=98:0", default_console=b"console=tty0",
    swallowed_prefixes=(b"xterm=",), umid_swallowed="until_set", umid_max_len=63,
    too_long_stream="stderr", too_long_status=1)
