"""What a guest's flushes do on the host: which host files get synced, by whom, how often.

ubd_kern.c [6.1]: a guest fsync/fdatasync of the device, an O_SYNC or O_DSYNC write, a
`dd conv=fsync` all end in blkdev_fsync() / generic_write_sync() -> REQ_OP_FLUSH, which
ubd_submit_request() hands the I/O thread with no descriptor (segs = 0), so io_thread() never
calls do_io() and its fdatasync(fds[0]) is never reached: nothing happens on the host. The
only durability the driver gives is O_SYNC on its host files (os_open_file(), flag s or
`ubd=sync`): every host write is then synchronous.

These scenarios need the host side of each step, which kernel_ref's differential run does not
record, so they are not in SCENARIOS: kernel_ref/sync_log.py runs them on both backends with
build/uml_sync_log.so preloaded (`python -m kernel_ref.sync_log run --all`), and
tests/kernel_ref/test_host_syncs.py compares the two. Each boot's steps are cut apart in the
log by markers (see sync_log.py); every step writes its own 4 KiB block.
"""
from kernel_ref.steps import MiB, backing, mkcow
from kernel_ref.sync_log import dd, fdatasync, fsync, sync, syncfs

# Only the differential suite's scenarios (kernel_ref/scenario.py); none here, see above.
SCENARIOS: list[dict] = []


def _steps(dev: str) -> list[dict]:
    """Every way a guest asks for durability, after two writes that do not."""
    return [dd(dev, 1), dd(dev, 2, oflag="direct"),
            dd(dev, 3, conv="fsync"), dd(dev, 4, conv="fdatasync"),
            dd(dev, 5, oflag="direct", conv="fsync"),
            dd(dev, 6, oflag="dsync"), dd(dev, 7, oflag="sync"),
            dd(dev, 8, oflag="direct,dsync"), dd(dev, 9, oflag="direct,sync"),
            fsync(dev), fdatasync(dev), syncfs(dev), sync()]


# Host calls ubdsim makes that linux.uml does not, by step label (a to-do list, as
# kernel_ref/known_gaps.py; tests/kernel_ref/test_host_syncs.py fails when a row stops
# holding). ubdsim/harness does not trap a guest's sync(2) (session.py traces no "sync"), so
# under `ubdsim run` the guest program's sync(2) runs on the host and syncs every host file,
# the COW file included. Under linux.uml, ksys_sync() [6.1] writes the guest's dirty pages
# (sync_bdevs()) and sends the driver no flush at all (its flush counter stays at 0), and
# nothing reaches the host.
KNOWN_EXTRA = {"sync": {"guest sync *": 1}}

_COW = {"back.img": backing(2 * MiB), "cow.img": mkcow("back.img")}
_RAW = {"disk.img": backing(2 * MiB, "R")}

HOST_SYNCS = [
    {"name": "host-syncs-cow",
     "about": "COW unit: no guest flush syncs any host file (the COW, nor the backing file)",
     "files": dict(_COW),
     "options": ["ubd0=cow.img,back.img"],
     "boots": [{"guest": _steps("ubda")}]},
    {"name": "host-syncs-cow-flag-s",
     "about": "COW unit with flag s: the COW file is opened O_SYNC, still no sync call",
     "files": dict(_COW),
     "options": ["ubd0s=cow.img,back.img"],
     "boots": [{"guest": _steps("ubda")}]},
    {"name": "host-syncs-cow-ubd-sync",
     "about": "COW unit after ubd=sync: opened O_SYNC as with flag s, no sync call",
     "files": dict(_COW),
     "options": ["ubd=sync", "ubd0=cow.img,back.img"],
     "boots": [{"guest": _steps("ubda")}]},
    {"name": "host-syncs-raw",
     "about": "raw unit: no guest flush syncs the host file",
     "files": dict(_RAW),
     "options": ["ubd0=disk.img"],
     "boots": [{"guest": _steps("ubda")}]},
    {"name": "host-syncs-raw-flag-s",
     "about": "raw unit with flag s: opened O_SYNC, still no sync call",
     "files": dict(_RAW),
     "options": ["ubd0s=disk.img"],
     "boots": [{"guest": _steps("ubda")}]},
]
