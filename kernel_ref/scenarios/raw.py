"""Raw files (no COW header): open_ubd_file() probes the header only when it can [6.1].

Without a backing file on the command line, an unreadable header means "use the file raw";
flag d never probes. A raw file's first bytes are guest data, so a guest can plant a COW
magic there and change how the next boot opens the file (the probe hazard).
"""
from kernel_ref.steps import MiB, backing, mkcow, poke, raw_bytes, read, read_all, size, write

_MAGIC_BE = bytes.fromhex("4f4f4f4d")   # the COW magic as V2/V3 store it

SCENARIOS = [
    {"name": "raw-write-read",
     "about": "a raw disk image: writes land in place, reads come back",
     "files": {"disk.img": backing(2 * MiB, "R")},
     "options": ["ubd0=disk.img"],
     "boots": [{"guest": [size("ubda"), write("ubda", 5, 3, "W"), read("ubda", 0, 16),
                          read_all("ubda")]}]},
    {"name": "raw-missing-file",
     "about": "a raw unit whose file does not exist: Failed to open, no device",
     "files": {},
     "options": ["ubd0=missing.img"],
     "boots": [{"guest": [read("ubda", 0, 1), size("ubda")]}]},
    {"name": "raw-flag-d-over-cow",
     "about": "flag d over a uml_mkcow file: the header is guest data, sector 0 writable",
     "files": {"back.img": backing(1 * MiB), "cow.img": mkcow("back.img")},
     "options": ["ubd0d=cow.img"],
     # Sector 0 holds the absolute backing path (it differs per run): read the header's
     # last sector and the bitmap, then overwrite sector 0 and read it back.
     "boots": [{"guest": [size("ubda"), read("ubda", 8, 8), write("ubda", 0, 1, "OVER"),
                          read("ubda", 0, 1)]}]},
    {"name": "raw-cow-without-backing-option",
     "about": "a COW file given alone: the backing file named in its header is used",
     "files": {"back.img": backing(1 * MiB), "cow.img": mkcow("back.img")},
     "options": ["ubd0=cow.img"],
     "boots": [{"guest": [size("ubda"), write("ubda", 2, 1, "C"), read("ubda", 0, 4)]}]},
    {"name": "raw-bad-version-magic",
     "about": "a raw file starting with the COW magic and version 9: message, then used raw",
     "files": {"disk.img": raw_bytes(_MAGIC_BE + bytes.fromhex("00000009"), size=1 * MiB)},
     "options": ["ubd0=disk.img"],
     "boots": [{"guest": [size("ubda"), read("ubda", 0, 1)]}]},
    {"name": "raw-short-file",
     "about": "a 4-byte raw file: short header message, a device of one sector",
     "files": {"disk.img": raw_bytes(b"abcd")},
     "options": ["ubd0=disk.img"],
     "boots": [{"guest": [size("ubda"), read_all("ubda")]}]},
    {"name": "raw-magic-planted-between-boots",
     "about": "a raw disk gets a V3 magic at sector 0 after boot 1; boot 2 probes it as COW",
     "files": {"disk.img": backing(1 * MiB, "R")},
     "options": ["ubd0=disk.img"],
     "boots": [{"guest": [write("ubda", 0, 1, "P")]},
               {"host": [poke("disk.img", 0, _MAGIC_BE + bytes.fromhex("00000003"))],
                "guest": [size("ubda"), read("ubda", 0, 1)]}]},
]
