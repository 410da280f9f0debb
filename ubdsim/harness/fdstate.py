"""Per-open state of the guest's device file descriptors, keyed by the memfd inode.

An `open("/dev/ubda")` is rewritten into `memfd_create()` (guest-harness-notes.md): the
host kernel then gives the guest a real descriptor and handles dup/dup2/dup3/F_DUPFD, fork,
clone, SCM_RIGHTS, close-on-exec and close for us. What the kernel cannot know (which unit,
the open flags, the file position) lives here, keyed by the memfd's inode number. Every
descriptor that shares an open file description shares the inode, so dup'ed descriptors
share the offset exactly like `struct file`'s f_pos.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .device_unit import Unit
from .pagecache import Readahead

O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2
O_DIRECT = 0o40000
O_LARGEFILE = 0o100000
O_SYNC = 0o4010000
O_DSYNC = 0o10000
O_EXCL = 0o200
O_CREAT = 0o100
O_CLOEXEC = 0o2000000
O_TRUNC = 0o1000
# fs/fcntl.c SETFL_MASK: the only status flags F_SETFL may change.
SETFL_MASK = 0o2000 | 0o20000 | 0o4000 | O_DIRECT | 0o1000000   # APPEND|ASYNC|NONBLOCK|DIRECT|NOATIME


@dataclass
class OpenFile:
    """One open file description of a ubd node (struct file)."""

    unit: Unit
    flags: int                     # f_flags as F_GETFL reports them (O_CLOEXEC excluded)
    offset: int = 0                # f_pos, shared by every dup of this description
    exclusive: bool = False        # opened with O_EXCL (FMODE_EXCL)
    readahead: Readahead | None = None   # f_ra, set up at the first buffered read
    wb_err: int = 0                # f_wb_err: the mapping's errseq_t sampled at open

    @property
    def readable(self) -> bool:
        return (self.flags & O_ACCMODE) in (0, O_RDWR)

    @property
    def writable(self) -> bool:
        return (self.flags & O_ACCMODE) in (O_WRONLY, O_RDWR)

    @property
    def direct(self) -> bool:
        return bool(self.flags & O_DIRECT)

    @property
    def sync(self) -> bool:
        return bool(self.flags & (O_SYNC | O_DSYNC))


def _memfd_device() -> int:
    """st_dev shared by every memfd (the kernel's internal shm mount)."""
    fd = os.memfd_create("ubdsim-probe", os.MFD_CLOEXEC)
    try:
        return os.fstat(fd).st_dev
    finally:
        os.close(fd)


@dataclass
class OpenFiles:
    """All device open file descriptions of the guest tree."""

    by_inode: dict[int, OpenFile] = field(default_factory=dict)
    memfd_dev: int = field(default_factory=_memfd_device)

    def lookup(self, tid: int, fd: int) -> OpenFile | None:
        """The device open behind guest descriptor `fd` of thread `tid`, or None when the
        descriptor is anything else (or not open: the host kernel then answers EBADF)."""
        if fd < 0 or fd > 0x7FFFFFFF:
            return None
        try:
            st = os.stat(f"/proc/{tid}/fd/{fd}")
        except OSError:
            return None
        if st.st_dev != self.memfd_dev:
            return None
        return self.by_inode.get(st.st_ino)

    def register(self, tid: int, fd: int, open_file: OpenFile) -> int:
        """Remember a fresh open; returns the memfd inode that now stands for it."""
        ino = os.stat(f"/proc/{tid}/fd/{fd}").st_ino
        self.by_inode[ino] = open_file
        return ino

    def live_inodes(self, tgids: set[int]) -> set[int]:
        """Inodes still referenced by some descriptor of the guest tree (open counts, O_EXCL):
        we do not see close(), so liveness is read from /proc when it matters."""
        live = set()
        for tgid in tgids:
            try:
                names = os.listdir(f"/proc/{tgid}/fd")
            except OSError:
                continue
            for name in names:
                try:
                    st = os.stat(f"/proc/{tgid}/fd/{name}")
                except OSError:
                    continue
                if st.st_dev == self.memfd_dev and st.st_ino in self.by_inode:
                    live.add(st.st_ino)
        return live
