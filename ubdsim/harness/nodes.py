"""Device node names and what `stat` says about them.

From: `arch/um/drivers/ubd_kern.c` ubd_add()/ubd_disk_register() [6.1]: disks are named
`ubda`..`ubdp` (major UBD_MAJOR 98, minor `unit << UBD_SHIFT`, UBD_SHIFT 4); 2.4.20's
ubd_kern.c names them `ubd0`.. with devfs entries `ubd/0`... Every profile accepts every
spelling (issue 5), so a guest script written for one era runs under the other.
"""
from __future__ import annotations

import os
import stat
import string
from dataclasses import dataclass

UBD_MAJOR = 98          # ubd_kern.c UBD_MAJOR
UBD_SHIFT = 4           # ubd_kern.c UBD_SHIFT: 16 minors per disk (partitions)
# devtmpfs creates disk nodes root:root 0600 (drivers/base/devtmpfs.c); linux.uml, which
# runs no udev, shows exactly that. (issue 5 asked for 0660, the udev rule's mode.)
NODE_MODE = stat.S_IFBLK | 0o600


def unit_for_path(path: str, max_units: int) -> int | None:
    """The unit a normalised absolute path names, or None when it is not a ubd node.

    `/dev/ubda`, `/dev/ubd0` and `/dev/ubd/0` all name unit 0. Units beyond the profile's
    `max_units` are not nodes at all (the kernel has no minor for them).
    """
    if not path.startswith("/dev/ubd"):
        return None
    rest = path[8:]
    if rest.startswith("/"):
        rest = rest[1:]
        unit = int(rest) if rest.isdigit() and (rest == "0" or not rest.startswith("0")) else None
    elif len(rest) == 1 and rest in string.ascii_lowercase:
        unit = ord(rest) - ord("a")
    elif rest.isdigit() and (rest == "0" or not rest.startswith("0")):
        unit = int(rest)
    else:
        return None
    return unit if unit is not None and unit < max_units else None


def resolve(path: bytes, cwd: str) -> str:
    """Absolute, normalised form of a guest path (no symlink resolution: /dev has none)."""
    text = os.fsdecode(path)
    return os.path.normpath(text if text.startswith("/") else os.path.join(cwd, text))


@dataclass(frozen=True)
class NodeStat:
    """The fields a `stat` of a ubd node reports, shared by stat/lstat/fstat/statx."""

    dev: int            # the filesystem holding the node (devtmpfs: the host's /dev)
    ino: int
    mode: int
    uid: int
    gid: int
    rdev_major: int
    rdev_minor: int
    blksize: int
    time_ns: int

    @property
    def rdev(self) -> int:
        return os.makedev(self.rdev_major, self.rdev_minor)


def node_stat(unit: int, time_ns: int) -> NodeStat:
    """The node as devtmpfs makes it (observed with linux.uml 6.1): root:root, size 0."""
    dev_fs = os.stat("/dev").st_dev
    return NodeStat(dev=dev_fs, ino=0x75626400 + unit, mode=NODE_MODE, uid=0, gid=0,
                    rdev_major=UBD_MAJOR, rdev_minor=unit << UBD_SHIFT, blksize=4096,
                    time_ns=time_ns)
