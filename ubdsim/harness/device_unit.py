"""One configured unit as the guest's block layer sees it: the registered disk, the unit the
driver has open while some guest descriptor refers to it, and the block-layer state that
lives above the driver (soft block size, BLKROSET, read-ahead)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..device.api import BlockDevice
from ..device.disk import Disk
from .nodes import NodeStat
from .pagecache import initial_block_size
from .writeback import MappingErrors


@dataclass
class Unit:
    number: int
    disk: Disk
    node: NodeStat
    soft_block_max: int = 4096
    block_size: int = 0            # BLKBSZGET; 0 until __post_init__ computes it
    read_only_set: bool = False    # BLKROSET (bdev->bd_read_only)
    read_ahead_sectors: int = 256  # BLKRAGET: default 128 KiB read-ahead
    exclusive_inodes: set[int] = field(default_factory=set)
    # The driver's opened unit while the guest holds the disk open (None at count 0); every
    # descriptor-based handler reaches it through an open descriptor, so it is set then.
    device: BlockDevice | None = None
    # memfd inodes standing for this unit's opens not yet released (see session.py).
    open_inodes: set[int] = field(default_factory=set)
    # The bdev inode's write-back errors: they outlive every open, like the inode.
    wb_errors: MappingErrors = field(default_factory=MappingErrors)

    def __post_init__(self) -> None:
        self.initial_block_size = initial_block_size(self.disk.size, self.soft_block_max)
        if not self.block_size:
            self.block_size = self.initial_block_size

    @property
    def max_sectors(self) -> int:
        """BLKSECTGET: ubd_kern.c ubd_open_dev() [6.1] limits a COW unit's requests to
        8 * sizeof(long) = 64 sectors (one bitmap word); a raw unit keeps the block layer's
        BLK_SAFE_MAX_SECTORS, 255 (both observed with linux.uml)."""
        return 64 if getattr(self.device, "backing_path", None) else 255

    @property
    def size(self) -> int:
        return self.disk.size

    @property
    def read_only(self) -> bool:
        """bdev_read_only(): the disk's flag (set_disk_ro() at its last open), or BLKROSET."""
        return self.disk.readonly or self.read_only_set
