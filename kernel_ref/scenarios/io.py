"""The I/O path: writes, reads, discard and flush through the COW bitmap [6.1].

O_DIRECT writes touch exactly the sectors asked for; buffered writes reach the device in
whole 4 KiB page-cache blocks. Discard punches holes in the COW file and sets the bits.

Two read quirks of ubd_kern.c do_io() [6.1] seen here: after a multi-page request's page
whose sectors come partly from the COW file, `req->offset += len` advances by the LAST run's
length only, so the following pages of that request are read from too low an offset
(observed: device sectors 8-63 returned backing sectors 3-58); and a short pread at the end
of a file is retried at the same offset, so the tail of a partial last sector repeats the
sector's first bytes instead of zeros.
"""
from kernel_ref.steps import (MiB, backing, discard, fsck, mkcow, mkfs, read, read_all, size,
                              sync, write)

_COW = {"back.img": backing(4 * MiB), "cow.img": mkcow("back.img")}

SCENARIOS = [
    {"name": "io-direct-write-exact-sectors",
     "about": "O_DIRECT writes of 1, 3 and 9 sectors: exactly those bits and sectors",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 3, 1, "D1"), write("ubda", 13, 3, "D3"),
                          write("ubda", 62, 9, "D9"), read("ubda", 0, 80)]}]},
    {"name": "io-buffered-write-whole-pages",
     "about": "buffered write of sectors 3-4: the page cache writes back sectors 0-7",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 3, 2, "BUF", direct=False), sync(),
                          read("ubda", 0, 16)]}]},
    {"name": "io-buffered-write-fsync",
     "about": "buffered write with conv=fsync across a page boundary (sectors 6-9)",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 6, 4, "FS", direct=False, fsync=True),
                          read("ubda", 0, 24, direct=False)]}]},
    {"name": "io-buffered-then-direct-read",
     "about": "buffered writes read back through the cache and directly",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 100, 20, "BR", direct=False), read("ubda", 96, 32, direct=False),
                          sync(), read("ubda", 96, 32)]}]},
    {"name": "io-discard-cow",
     "about": "blkdiscard on a COW unit: holes punched, bits set, zeros read back",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 0, 64, "DATA"), discard("ubda", 8, 32), read("ubda", 0, 64),
                          discard("ubda", 1024, 8), read("ubda", 1024, 8)]}]},
    {"name": "io-discard-raw",
     "about": "blkdiscard on a raw unit: the file gets a hole, zeros read back",
     "files": {"disk.img": backing(2 * MiB, "R")},
     "options": ["ubd0=disk.img"],
     "boots": [{"guest": [discard("ubda", 16, 16), read("ubda", 8, 32), size("ubda")]}]},
    {"name": "io-discard-then-reboot",
     "about": "a discarded range stays zero after a reboot (the bits persist)",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [discard("ubda", 0, 8)]}, {"guest": [read("ubda", 0, 16)]}]},
    {"name": "io-two-units",
     "about": "a COW unit and a raw unit side by side",
     "files": {**_COW, "disk.img": backing(1 * MiB, "R")},
     "options": ["ubd0=cow.img,back.img", "ubd1=disk.img"],
     "boots": [{"guest": [write("ubda", 1, 1, "A"), write("ubdb", 2, 1, "B"), read("ubda", 0, 4),
                          read("ubdb", 0, 4), size("ubda"), size("ubdb")]}]},
    {"name": "io-mkfs-fsck-cow",
     "about": "mkfs.ext2 (fixed UUID and time) on a COW unit, then e2fsck -fn",
     "files": {"back.img": backing(8 * MiB, fill="zero"), "cow.img": mkcow("back.img")},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [mkfs("ubda"), fsck("ubda")]}, {"guest": [fsck("ubda"), read("ubda", 0, 8)]}]},
    {"name": "io-mkfs-with-discard",
     "about": "mkfs.ext2 that discards the device first (its default)",
     "files": {"back.img": backing(8 * MiB), "cow.img": mkcow("back.img")},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [mkfs("ubda", discard_first=True), fsck("ubda"), read_all("ubda")]}]},
    {"name": "io-write-past-end",
     "about": "a write that starts at the last sector and runs past the end",
     "files": {"back.img": backing(1 * MiB), "cow.img": mkcow("back.img")},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 2047, 4, "PAST"), read("ubda", 2044, 8)]}]},
    {"name": "io-buffered-read-after-partial-cow-page",
     "about": "buffered 32 KiB read whose first page is half COW: the later pages shift",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 3, 2, "W"), read("ubda", 0, 64, direct=False),
                          read("ubda", 0, 64)]}]},
]
