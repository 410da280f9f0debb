"""The option sets linux.uml 6.1 is booted with (the differential test's corpus).

A boot costs ~1.5 s, so each BOOT batches several option sets that touch different units
(units collide, so sets sharing a unit, `ubd=sync` ordering, `--` and unterminated quotes get
boots of their own or come last). Both sides always see the same whole command line, so the
comparison stays exact however the sets are grouped. Words are str; non-UTF-8 bytes are
surrogateescape'd. File names are relative and never exist: the boot runs in an empty folder,
so every configured unit shows up at init as `Failed to initialize ubd device N` (plus
`Couldn't stat "<backing>"` when it has a backing file), which is how unit numbers and backing
names are observed.
"""
from __future__ import annotations

OptionSet = tuple[str, list[str]]

BOOTS: list[list[OptionSet]] = [
    [  # plain configurations, both separators, serials
        ("cow and backing with comma", ["ubd1=c1,b1"]),
        ("cow and backing with colon", ["ubd2=c2:b2"]),
        ("mixed separators and serial", ["ubd3=c3,b3:s3"]),
        ("fields after the serial are ignored", ["ubd4=c4:b4,s4,x4:y4"]),
        ("empty backing with serial", ["ubd5=c5,,s5"]),
        ("empty file and backing", ["ubd6=,,s6"]),
        ("trailing separators", ["ubd7=c7,,"]),
        ("only separators", ["ubd8=:::"]),
        ("empty serial then more", ["ubd9=c9,b9,,x9"]),
        ("letter unit", ["ubdk=ck,bk"]),
        ("last letter unit p", ["ubdp=cp"]),
    ],
    [  # base-0 unit numbers
        ("octal 010 is unit 8", ["ubd010=o8"]),
        ("hex 0x1 is unit 1", ["ubd0x1=h1,hb1"]),
        ("hex with capital X", ["ubd0X2=h2"]),
        ("08 stops after the 0", ["ubd08=x"]),
        ("0x without hex digit is octal 0", ["ubd0xg=x"]),
        ("09 stops after the 0", ["ubd09=x"]),
        ("2**32-1 becomes -1", ["ubd4294967295=x"]),
        ("16 is out of range", ["ubd16=x"]),
        ("15 is the last unit", ["ubd15=d15"]),
        ("017 is unit 15 again", ["ubd017=x"]),
        ("0x0e is unit 14", ["ubd0x0e=d14"]),
        ("huge number wraps to -1 via 2**64-1", ["ubd18446744073709551615=x"]),
        ("decimal 12 with flag", ["ubd12r=d12"]),
    ],
    [  # numbers wrapping into range
        ("2**32 is unit 0", ["ubd4294967296=w0"]),
        ("2**32+3 is unit 3", ["ubd4294967299=w3"]),
        ("2**64+5 wraps to unit 5", ["ubd18446744073709551621=w5,wb5"]),
        ("leading zeros octal 0007", ["ubd0007=w7"]),
    ],
    [  # letters and bad unit characters
        ("letter q is out of range", ["ubdq=x"]),
        ("letter z is out of range", ["ubdz=x"]),
        ("capital letter", ["ubdA=x"]),
        ("punctuation", ["ubd-1=x"]),
        ("underscore", ["ubd_0=x"]),
        ("bare ubd", ["ubd"]),
        ("letter a is unit 0", ["ubda=la,lb"]),
        ("letter c then flags", ["ubdcr=lc"]),
        ("two letters", ["ubdde=x"]),
    ],
    [  # flags
        ("all five flags", ["ubd1rscdt=f1"]),
        ("six flags is the limit", ["ubd2rrrrrr=f2"]),
        ("seven flags is too many", ["ubd3rrrrrrr=f3"]),
        ("eight flags: missing equals", ["ubd4rrrrrrrr=f4"]),
        ("seven flags then end", ["ubd5rscdtrs"]),
        ("unknown flag letter", ["ubd6x=f6"]),
        ("no equals at all", ["ubd7"]),
        ("flag then end", ["ubd8r"]),
        ("capital flag", ["ubd9R=f9"]),
        ("flag after equals is file text", ["ubd10=r"]),
        ("d without backing", ["ubd11d=f11"]),
        ("d with backing", ["ubd12d=f12,b12"]),
        ("d with colon backing and serial", ["ubd13dc=f13:b13:s13"]),
        ("d with empty backing and serial", ["ubd14dt=f14,,s14"]),
    ],
    [  # sticky flags and repeated units
        ("d sticks after rejection", ["ubd1d=a1,b1", "ubd1=c1,d1", "ubd1=e1"]),
        ("same unit twice", ["ubd2=a2", "ubd2=b2"]),
        ("same unit by letter", ["ubd3=a3", "ubdd=b3"]),
        ("same unit by octal", ["ubd4=a4", "ubd04=b4"]),
        ("empty file does not configure", ["ubd5=", "ubd5=a5,b5"]),
        ("empty file with backing leaves backing", ["ubd6=,b6", "ubd6=a6"]),
        ("root_fs gets a stray backing", ["ubd0=,rootback"]),
        ("rejected flag then retry", ["ubd7q=a7", "ubd7=b7"]),
    ],
    [  # ubd=sync ordering and fake majors
        ("unit before sync", ["ubd1=s1"]),
        ("sync", ["ubd=sync"]),
        ("unit after sync", ["ubd2=s2"]),
        ("sync twice", ["ubd=sync"]),
        ("fake major", ["ubd=9"]),
        ("empty fake major", ["ubd="]),
        ("sync with junk", ["ubd=syncx"]),
        ("capital SYNC", ["ubd=SYNC"]),
    ],
    [  # no ubd=sync: no Synchronous line at init
        ("s flag alone does not print sync mode", ["ubd1s=n1"]),
        ("udb typo with unit", ["udb0=x"]),
        ("bare udb", ["udb"]),
        ("udb with sync", ["udb=sync"]),
        ("udb with letters", ["udbfoo"]),
        ("capital UBD is not ubd", ["UBD2=x"]),
        ("ubd inside a word is not ubd", ["xubd3=x"]),
    ],
    [  # the kernel's own splitting: spaces, quotes, NBSP
        ("space splits one word", ["ubd 1=x"]),
        ("quoted value with a space", ['ubd2="q 2",qb2']),
        ("whole option quoted", ['"ubd3=q 3,qb3"']),
        ("quote inside the value", ['ubd4=q4"a b"']),
        ("quoted flag before equals", ['ubd5"r"=x']),
        ("empty quoted value", ['ubd6=""']),
        ("tab splits", ["ubd7=t7\tubd8=t8"]),
        ("NBSP byte splits in the kernel", ["ubd9=n9\udca0ubd10=n10"]),
        ("two options in one word", ["ubd11=p11 ubd12=p12,pb12"]),
    ],
    [  # a lone quote joins words up to the next quote, or to the end of the line
        ("lone quote before equals", ['ubd1"=x', "ubd2=j2", 'ubd3="j3', "ubd4=j4"]),
        ("unterminated quote swallows the rest", ['ubd13="u13 ubd14=u14']),
    ],
    [  # printk cuts long records (KERN_ERR lines 2 bytes earlier than level-less ones)
        ("long rejected option", ["ubdz=" + "L" * 1200]),
        ("long udb option", ["udb" + "U" * 1200]),
    ],
    [  # exactly at printk's limit, and one byte over
        ("rejected option exactly at the limit", ["ubdy=" + "M" * 923]),
        ("rejected option one byte over", ["ubdx=" + "N" * 924]),
        ("udb option exactly at the limit", ["udb" + "V" * 924]),
    ],
    [
        ("udb option one byte over", ["udb" + "W" * 925]),
    ],
    [  # "--": the rest goes to init
        ("before dashes", ["ubd1=d1"]),
        ("dashes", ["--"]),
        ("after dashes", ["ubd2=d2", "ubd3x"]),
    ],
    [  # bytes that are not UTF-8, and other odd characters
        ("non-UTF-8 file and backing", ["ubd1=\udcff\udcfe,\udc80b"]),
        ("non-UTF-8 after udb", ["udb\udcc3\udca9\udcff"]),
        ("UTF-8 letters", ["ubd2=é,ü"]),
        ("non-UTF-8 unit", ["ubd\udce9=x"]),
        ("control characters", ["ubd3=\x01\x7f,\x1bb"]),
        ("backslash and percent", ["ubd4=a\\%s,%d"]),
        ("UTF-8 NBSP: its 0xA0 byte splits", ["ubd5=u5\xa0ubd6=u6"]),
    ],
]

# Attribute boots: every file named here exists (and root_fs), so the units become disks whose
# read-only flag, serial and discard support are read back from the guest's sysfs, and whose
# host files are inspected while linux.uml holds them (O_SYNC, fcntl lock).
ATTR_BOOTS: list[tuple[list[OptionSet], list[str]]] = [
    ([
        ("empty file keeps the r flag for root_fs", ["ubd0r="]),
        ("r flag", ["ubd1r=f1"]),
        ("t flag and serial", ["ubd2t=f2,,SER2"]),
        ("colon separators, empty backing", ["ubd3rt=f3:,S3"]),
        ("no flags", ["ubd4=f4"]),
        ("t and c", ["ubd5tc=f5"]),
        ("serial is cut at a colon", ["ubd6=f6,,ser:ial"]),
        ("s flag and colon serial", ["ubd7s=f7::S7"]),
        ("d flag on a raw file", ["ubd8d=f8"]),
        ("trailing comma", ["ubd9=f9,"]),
        ("repeated r", ["ubd10rrrr=f10"]),
        ("serial empty", ["ubd11rt=f11,,"]),
        ("letter p with serial", ["ubdp=fp,,P"]),
        ("serial with odd characters", ["ubd12=f12,,a%sb\\c"]),
    ], ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "fp", "f12"]),
    ([
        ("d and t stick after a rejected option", ["ubd1dt=x1,b1", "ubd1=f1"]),
        ("r does not stick after a rejected option", ["ubd2rq=f2", "ubd2=f2"]),
        ("t sticks after an empty file", ["ubd3t=", "ubd3=f3,,S3"]),
        ("root_fs takes t from an empty ubd0", ["ubd0t=,,"]),
        ("ubd=sync then r", ["ubd=sync", "ubd4r=f4"]),
        ("too many flags leave t behind", ["ubd5rrrrrrt=f5", "ubd5=f5"]),
        ("out of range after", ["ubd6=f6", "ubd16t=f6"]),
    ], ["f1", "f2", "f3", "f4", "f5", "f6"]),
    ([
        ("sync first: the root_fs default stays without O_SYNC", ["ubd=sync"]),
        ("sync and shared", ["ubd1c=f1"]),
        ("sync, shared, read-only", ["ubd2rc=f2"]),
        ("s flag repeated", ["ubd3ss=f3"]),
    ], ["f1", "f2", "f3"]),
    ([
        ("s flag alone", ["ubd1s=f1"]),
        ("c flag alone", ["ubd2c=f2"]),
        ("r flag alone", ["ubd3r=f3"]),
        ("rsc", ["ubd4rsc=f4"]),
        ("ubd=sync comes too late for the units before it", ["ubd=sync"]),
    ], ["f1", "f2", "f3", "f4"]),
]

# Everything the oracle boots: (option sets, files to create or None).
ALL_BOOTS: list[tuple[list[OptionSet], list[str] | None]] = [(sets, None) for sets in BOOTS] + ATTR_BOOTS
