"""Read-only fallback: open_ubd_file() [6.1] reopens read-only on EROFS or EACCES.

Root bypasses mode bits, so chmod 444 alone never gives root an EACCES. Two ways that work
here: a read-only bind mount over the directory (EROFS, as root), and running the backend as
`nobody` over files it owns with mode 0444 (EACCES). `chattr +i` gives EPERM, which does not
fall back. The backing file is always read-only.
"""
from kernel_ref.steps import MiB, backing, chmod, mkcow, raw_bytes, read, size, write

SCENARIOS = [
    {"name": "readonly-fallback-erofs",
     "about": "COW file on a read-only bind mount: reopened read-only, writes fail",
     "files": {"back.img": backing(2 * MiB), "ro/cow.img": mkcow("back.img")},
     "options": ["ubd0=ro/cow.img,back.img"],
     "boots": [{"ro_dirs": ["ro"],
                "guest": [size("ubda"), write("ubda", 0, 1, "NO"), read("ubda", 0, 2)]}]},
    {"name": "readonly-fallback-eacces",
     "about": "run as nobody, COW file mode 0444: EACCES, reopened read-only",
     "files": {"back.img": backing(2 * MiB), "cow.img": mkcow("back.img")},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"run_as": "nobody", "host": [chmod("cow.img", 0o444)],
                "guest": [size("ubda"), write("ubda", 0, 1, "NO"), read("ubda", 0, 2)]}]},
    {"name": "readonly-raw-erofs",
     "about": "raw file on a read-only bind mount: a read-only device",
     "files": {"ro/disk.img": backing(1 * MiB, "R")},
     "options": ["ubd0=ro/disk.img"],
     "boots": [{"ro_dirs": ["ro"], "guest": [size("ubda"), write("ubda", 3, 1, "NO"),
                                             read("ubda", 0, 4)]}]},
    {"name": "readonly-backing-on-ro-mount",
     "about": "only the backing file is on a read-only mount: the unit stays writable",
     "files": {"ro/back.img": backing(2 * MiB), "cow.img": mkcow("ro/back.img")},
     "options": ["ubd0=cow.img,ro/back.img"],
     "boots": [{"ro_dirs": ["ro"], "guest": [size("ubda"), write("ubda", 0, 1, "YES"),
                                             read("ubda", 0, 2)]}]},
    {"name": "readonly-create-in-ro-dir",
     "about": "missing COW file in a read-only directory: Open of COW file failed (EROFS)",
     "files": {"back.img": backing(1 * MiB), "ro/keep.txt": raw_bytes(b"an empty read-only dir\n")},
     "options": ["ubd0=ro/cow.img,back.img"],
     "boots": [{"ro_dirs": ["ro"], "guest": [read("ubda", 0, 1)]}]},
    {"name": "readonly-immutable-no-fallback",
     "about": "COW file chattr +i: EPERM is not EROFS/EACCES, so the unit fails to open",
     "files": {"back.img": backing(2 * MiB), "cow.img": mkcow("back.img")},
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"immutable": ["cow.img"], "guest": [size("ubda"), read("ubda", 0, 1)]}]},
]
