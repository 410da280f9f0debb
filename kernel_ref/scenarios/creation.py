"""Creating a COW file when it is missing: ubd_open_dev() -> create_cow_file() [6.1].

The kernel writes a V3 header (sector size 512, alignment 4096), the absolute backing path,
a zero bitmap, and one zero byte at the end of the data area; the device is as large as the
backing file rounded up to 512 bytes.
"""
from kernel_ref.steps import MiB, backing, read, read_all, size, write

SCENARIOS = [
    {"name": "create-v3-4mib",
     "about": "missing COW file + backing: a V3 header (align 4096), one byte at the end",
     "files": {"back.img": backing(4 * MiB)},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [size("ubda"), write("ubda", 3, 2, "W"), read("ubda", 0, 16),
                          read_all("ubda")]}]},
    {"name": "create-size-not-sector-multiple",
     "about": "backing of 4 MiB + 1000 bytes: device rounded up to 512, last partial sector",
     "files": {"back.img": backing(4 * MiB + 1000)},
     "options": ["ubd0=cow.img,back.img"],
     # A write to the partial last sector (8193) hung linux.uml 6.1.176 here (no exit within
     # 120 s), so the scenario writes the last whole sector and only reads the partial one.
     "boots": [{"guest": [size("ubda"), read("ubda", 8192, 2), write("ubda", 8192, 1, "END"),
                          read("ubda", 8190, 4), read_all("ubda")]}]},
    {"name": "create-size-not-4k-multiple",
     "about": "backing of 4 MiB + 3 sectors: bitmap byte partly used, writes at the very end",
     "files": {"back.img": backing(4 * MiB + 3 * 512)},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [size("ubda"), write("ubda", 8194, 1, "LAST"), write("ubda", 8192, 1, "L0"),
                          read("ubda", 8188, 7), read_all("ubda")]}]},
    {"name": "create-tiny-backing",
     "about": "a 1000-byte backing file: two sectors, the second partial",
     "files": {"back.img": backing(1000)},
     "options": ["ubd0=cow.img,back.img"],
     # Any O_DIRECT write to this 2-sector device hung linux.uml 6.1.176 here (even to
     # sector 0), so the scenario only sizes and reads it.
     "boots": [{"guest": [size("ubda"), read("ubda", 0, 1), read_all("ubda")]}]},
    {"name": "create-absolute-paths",
     "about": "absolute paths on the command line: messages and header carry them as given",
     "files": {"back.img": backing(2 * MiB)},
     "options": ["ubd0=$WORK/cow.img,$WORK/back.img"],
     "boots": [{"guest": [write("ubda", 0, 8, "A"), read("ubda", 0, 8)]}]},
    {"name": "create-readonly-unit",
     "about": "flag r with a missing COW file: 0-byte file left, header write fails (err 9)",
     "files": {"back.img": backing(1 * MiB)},
     "options": ["ubd0r=cow.img,back.img"],
     "boots": [{"guest": [size("ubda"), read("ubda", 0, 4)]}]},
    {"name": "create-missing-backing",
     "about": "missing COW file and missing backing file",
     "files": {},
     "options": ["ubd0=cow.img,nothere.img"],
     "boots": [{"guest": [size("ubda"), read("ubda", 0, 1)]}]},
    {"name": "create-in-missing-directory",
     "about": "COW file in a directory that does not exist: the open fails with ENOENT",
     "files": {"back.img": backing(1 * MiB)},
     "options": ["ubd0=nodir/cow.img,back.img"],
     "boots": [{"guest": [read("ubda", 0, 1)]}]},
    {"name": "create-empty-backing",
     "about": "a 0-byte backing file: a COW file for an empty device",
     "files": {"back.img": backing(0)},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [size("ubda"), read_all("ubda")]}]},
    {"name": "create-then-reopen",
     "about": "boot 1 creates and writes, boot 2 reopens the created file and reads it back",
     "files": {"back.img": backing(2 * MiB + 512)},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": [write("ubda", 10, 3, "ONE")]},
               {"guest": [read("ubda", 8, 8), write("ubda", 4096, 1, "TWO"), read_all("ubda")]}]},
]
