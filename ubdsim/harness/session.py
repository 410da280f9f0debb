"""One guest run: the units, the open descriptions, guest memory, and the dispatcher that
the tracer calls at every seccomp stop.

Opens and releases of a disk follow the driver's open count (ubd_kern.c ubd_open() /
ubd_release(), `device/disk.py`): each guest open of a node opens the Disk (the first one
reopens the driver's files), each open file description released releases it once. The
host kernel closes memfds behind our back (close, dup2 over, exit, close-on-exec), so a
release is noticed lazily: at the next open of that unit, and when the run ends, by reading
which memfd inodes the traced processes still hold (`/proc/PID/fd`). Until then the files,
their locks and the in-memory bitmap stay as they were, which only another opener of the
same files (another process, or a later guest open) could tell apart.
"""
from __future__ import annotations

import errno
import os
import sys
import time
from collections import Counter
from typing import Mapping, Sequence

from ..device.disk import Disk
from ..errors import UbdError
from . import nodes
from .device_unit import Unit
from .fdstate import OpenFile, OpenFiles
from .pagecache import PageCache
from .writeback import (DIRTY_EXPIRE, REQ_FLUSHER, BlockLog, UnitErrors, disk_name,
                        write_and_wait, write_back)
from .rules import HarnessRules
from .syscalls.result import PASS, Emulated, Fail, NeedsExit, Result
from .syscalls.table import BY_NUMBER, FD_FIRST_NUMBERS, LANE_NUMBERS, traced_numbers
from .transport.bpf import build_filter
from .transport.memory import GuestMemory
from .transport.tracer import Tracer

AT_FDCWD = -100
# Calls that cannot change a device's bytes behind its page cache, or that do to the cache
# exactly what the kernel does themselves: rw.py for reads and writes (O_DIRECT included),
# fdops.py for fadvise64/readahead/fallocate (mm/fadvise.c, block/fops.c blkdev_fallocate()
# [6.1]) and ioctl_blk.py for the cache ioctls (block/ioctl.c [6.1]: BLKFLSBUF, BLKBSZSET,
# BLKDISCARD, BLKSECDISCARD, BLKZEROOUT). The rest make ubdsim drop every unit's pages.
KEEPS_CACHE = frozenset({
    "open", "openat", "openat2", "creat", "stat", "lstat", "newfstatat", "statx", "fstat",
    "access", "faccessat", "faccessat2", "statfs", "getxattr", "lgetxattr", "listxattr",
    "llistxattr", "read", "write", "pread64", "pwrite64", "readv", "writev", "preadv",
    "pwritev", "preadv2", "pwritev2", "lseek", "fsync", "fdatasync", "sync_file_range",
    "fcntl", "readahead", "fadvise64", "fallocate", "ioctl"})


class Session:
    """What every handler receives as `h`."""

    def __init__(self, disks: Mapping[int, Disk], max_units: int,
                 rules: HarnessRules = HarnessRules()) -> None:
        now = time.time_ns()
        self.rules = rules
        self.units: dict[int, Unit] = {
            n: Unit(n, disk, nodes.node_stat(n, now), rules.soft_block_max)
            for n, disk in disks.items()}
        self.max_units = max_units
        self.mem = GuestMemory()
        self.opens = OpenFiles()
        self.caches: dict[int, PageCache] = {n: PageCache() for n in self.units}
        self.block_log = BlockLog()
        for number, cache in self.caches.items():
            cache.errors = UnitErrors(self.block_log, self.units[number])
        # device reads and writes by path (rw.py): "copied" at the stop, "planted" on a host
        # descriptor, "exact" through the device model; `ubdsim run --stats` prints them
        self.stats: Counter[str] = Counter()
        self.tracer = Tracer(self.dispatch, self.mem, self.opens.memfd_dev, FD_FIRST_NUMBERS,
                             LANE_NUMBERS)

    # --- helpers for handlers -------------------------------------------------------------

    def fd(self, tid: int, fd: int) -> OpenFile | None:
        hint = self.tracer.hint
        if hint is not None and hint[0] == tid and hint[1] == fd:
            return self.opens.by_inode.get(hint[2])     # the C loop's stat of this descriptor
        return self.opens.lookup(tid, fd)

    def page_cache(self, unit: Unit) -> PageCache:
        """The pages of `unit`'s block-device inode, sized for the unit as it is open now
        (its soft block size; its requests, 64 sectors for a COW unit, 255 raw)."""
        cache = self.caches[unit.number]
        cache.block = unit.block_size
        cache.request_sectors = unit.max_sectors
        return cache

    def write_back(self, unit: Unit, flags: int, first: int = 0,
                   last: int = (1 << 64) - 1) -> None:
        """Write back `unit`'s dirty pages first..last (writeback.py)."""
        write_back(self.block_log, unit, self.caches[unit.number], flags, first, last)

    def write_and_wait(self, unit: Unit, first: int = 0, last: int = (1 << 64) - 1) -> int:
        """filemap_write_and_wait_range(): write back, then AS_EIO/AS_ENOSPC, cleared."""
        return write_and_wait(self.block_log, unit, self.caches[unit.number], first, last)

    def sync_all(self) -> None:
        """sync(2): iterate_bdevs() writes back every open disk (errors are not returned)."""
        for unit in self.units.values():
            if unit.device is not None:
                self.write_and_wait(unit)

    def lose_dirty(self) -> None:
        """ubdsim was stopped: the kernel's memory, dirty pages included, is gone."""
        for unit in self.units.values():
            cache = self.caches[unit.number]
            if cache.dirty:
                print(f"ubdsim run: {len(cache.dirty)} dirty page(s) of {disk_name(unit)} "
                      "lost: ubdsim was stopped before writing them back (a killed UML "
                      "loses them too)",
                      file=sys.stderr)
                cache.clear()

    def _flusher(self) -> None:
        """The deterministic flusher (writeback.py): expired dirty pages are written back."""
        before = time.monotonic() - DIRTY_EXPIRE
        for number, cache in self.caches.items():
            if cache.dirty and cache.expired(before):
                unit = self.units[number]
                if unit.device is not None:
                    self.write_back(unit, REQ_FLUSHER)

    def tgids(self) -> set[int]:
        return set(self.tracer.tids)

    def live_inodes(self) -> set[int]:
        """Device memfd inodes some traced process still holds (one /proc scan)."""
        return self.opens.live_inodes(self.tgids())

    def release_closed(self, unit: Unit, live: set[int]) -> None:
        """ubd_release() once per open file description of `unit` that no descriptor of the
        guest tree refers to any more (the last of them closes the driver's files)."""
        for ino in unit.open_inodes - live:
            self.opens.by_inode.pop(ino, None)
            self._release(unit, ino)

    def open_disk(self, unit: Unit) -> None:
        """ubd_open(): opens the driver's files when the count is 0; raises UbdError."""
        unit.device = unit.disk.open()

    def adopt(self, unit: Unit, ino: int) -> None:
        """A fresh open file description of `unit` now stands at memfd inode `ino`. Inode
        numbers are unique among live memfds, so one already counted belongs to a
        description that is gone: that one is released first."""
        for other in self.units.values():
            if ino in other.open_inodes:
                self._release(other, ino)
        unit.open_inodes.add(ino)

    def _release(self, unit: Unit, ino: int) -> None:
        unit.open_inodes.discard(ino)
        unit.exclusive_inodes.discard(ino)
        self.drop_open(unit)

    def drop_open(self, unit: Unit) -> None:
        """ubd_release() of one open; the last one closes the driver's files, after
        blkdev_put() -> blkdev_flush_mapping() [6.1]: sync_blockdev() (its error is
        nobody's), then kill_bdev()."""
        if unit.disk.count == 1 and unit.device is not None:
            self.write_and_wait(unit)
        unit.disk.release()
        if unit.disk.count == 0:
            unit.device = None
            self.caches[unit.number].clear()

    def finish(self) -> None:
        """End of the run: every open still counted is released."""
        for unit in self.units.values():
            self.release_closed(unit, set())

    def node_at(self, tid: int, dirfd: int, path_addr: int) -> int | None:
        """The unit number a guest path names (configured or not), None when it is no ubd
        node. Cheap for the common case: paths without "ubd" are not resolved at all."""
        try:
            path = self.mem.read_cstring(tid, path_addr)
        except OSError:
            return None                     # the kernel will answer EFAULT itself
        if b"ubd" not in path:
            return None
        try:
            if path.startswith(b"/"):
                base = "/"
            elif dirfd == AT_FDCWD:
                base = os.readlink(f"/proc/{tid}/cwd")
            else:
                base = os.readlink(f"/proc/{tid}/fd/{dirfd}")
        except OSError:
            return None
        return nodes.unit_for_path(nodes.resolve(path, base), self.max_units)

    # --- dispatcher ---------------------------------------------------------------------

    def dispatch(self, tid: int, regs) -> Result:
        entry = BY_NUMBER.get(regs.orig_rax)
        if entry is None:
            return PASS
        try:
            self._flusher()
            result = entry.handler(self, tid, regs)
            if entry.name not in KEEPS_CACHE and isinstance(result, (Emulated, NeedsExit)):
                # An emulated call that may change a device's bytes behind its cache, or
                # drops the cache in the kernel (truncate_bdev_range(), invalidate_bdev(),
                # kill_bdev()): ubdsim writes back and drops every unit's pages.
                for number, cache in self.caches.items():
                    if cache.dirty and self.units[number].device is not None:
                        self.write_and_wait(self.units[number])
                    cache.clear()
            return result
        except UbdError as err:
            return Fail(err.errno or errno.EIO)
        except OSError as err:
            return Fail(err.errno if err.errno in (errno.EFAULT, errno.ENOSPC) else errno.EIO)
        except Exception as err:            # a bug must not kill the guest tree silently
            print(f"ubdsim run: internal error in {entry.name}: {err!r}", file=sys.stderr)
            return Fail(errno.EIO)


def run_guest(disks: Mapping[int, Disk], argv: Sequence[str], *, max_units: int,
              rules: HarnessRules = HarnessRules(), pin: bool = True,
              stats: bool = False) -> int:
    """Run `argv` with `disks` (unit number -> registered disk, closed) visible as ubd nodes;
    returns the guest's exit status (128+N when signal N killed it or interrupted ubdsim).
    Every disk is closed again when this returns. `stats`: print stats_line() at the end."""
    session = Session(disks, max_units, rules)
    try:
        session.tracer.spawn(argv, build_filter(traced_numbers()), pin=pin)
        status = session.tracer.run()
        if session.tracer.interrupted:
            session.lose_dirty()
        return status
    except BaseException:
        session.lose_dirty()
        raise
    finally:
        session.finish()
        if stats:
            print(stats_line(session), file=sys.stderr)


def stats_line(session: Session) -> str:
    """Where the guest's intercepted calls were answered, as key=value words: seccomp stops
    answered in Python and in the C loop (native_wait.py; `loop=python` where it could not
    be built), the device reads/writes by path (`copied` counts the ones the C loop's lane
    served, `lane`, too), and the readahead bios read in one host read (`uncut`)."""
    tracer, counts = session.tracer, session.stats
    uncut = sum(cache.uncut for cache in session.caches.values())
    c_stops = tracer.passed + tracer.lane_served
    return (f"ubdsim run: stats: loop={'c' if tracer.native is not None else 'python'} "
            f"stops={tracer.stops + c_stops} python={tracer.stops} c={c_stops} "
            f"copied={counts['copied'] + tracer.lane_served} planted={counts['planted']} "
            f"exact={counts['exact']} uncut={uncut} lane={tracer.lane_served}")
