"""Host file locking: os_lock_file() from open_ubd_file() [6.1].

Every file the driver opens gets a whole-file fcntl(F_SETLK): a write lock when writable, a
read lock when read-only. A conflicting lock from another process refuses the unit with the
holder's pid; locks from the same process never conflict (POSIX record locks are per process).
"""
from kernel_ref.steps import MiB, backing, lock, mkcow, read, size, write

_COW = {"back.img": backing(2 * MiB), "cow.img": mkcow("back.img")}

SCENARIOS = [
    {"name": "lock-cow-write-locked",
     "about": "another process write-locks the COW file: F_SETLK failed, Failed to lock",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"locks": [lock("cow.img", "write")], "guest": [read("ubda", 0, 1)]}]},
    {"name": "lock-cow-read-locked",
     "about": "another process read-locks the COW file: the write lock is refused",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"locks": [lock("cow.img", "read")], "guest": [read("ubda", 0, 1)]}]},
    {"name": "lock-backing-write-locked",
     "about": "another process write-locks the backing file: its read lock is refused",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"locks": [lock("back.img", "write")], "guest": [read("ubda", 0, 1)]}]},
    {"name": "lock-backing-read-shared",
     "about": "another process read-locks the backing file: read locks share, unit opens",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"locks": [lock("back.img", "read")],
                "guest": [write("ubda", 0, 1, "OK"), read("ubda", 0, 2)]}]},
    {"name": "lock-readonly-unit-shares-read-lock",
     "about": "flag r on a raw file read-locked elsewhere: both read locks are granted",
     "files": {"disk.img": backing(1 * MiB, "R")},
     "options": ["ubd0r=disk.img"],
     "boots": [{"locks": [lock("disk.img", "read")], "guest": [size("ubda"), read("ubda", 0, 2)]}]},
    {"name": "lock-raw-write-locked",
     "about": "a raw unit whose file is write-locked elsewhere: refused",
     "files": {"disk.img": backing(1 * MiB, "R")},
     "options": ["ubd0=disk.img"],
     "boots": [{"locks": [lock("disk.img", "write")], "guest": [read("ubda", 0, 1)]}]},
    {"name": "lock-same-file-two-units",
     "about": "one raw file as ubd0 and ubd1: the same process, so no lock conflict",
     "files": {"disk.img": backing(1 * MiB, "R")},
     "options": ["ubd0=disk.img", "ubd1=disk.img"],
     "boots": [{"guest": [write("ubda", 0, 1, "A"), read("ubdb", 0, 1), size("ubdb")]}]},
    {"name": "lock-two-cows-one-backing",
     "about": "two COW files over one backing file: two read locks, both units work",
     "files": {"back.img": backing(2 * MiB)},
     "options": ["ubd0=a.cow,back.img", "ubd1=b.cow,back.img"],
     "boots": [{"guest": [write("ubda", 0, 2, "A"), write("ubdb", 1, 2, "B"), read("ubda", 0, 4),
                          read("ubdb", 0, 4)]}]},
]
