"""The block-device contract between the device model and its front ends.

The guest harness (`ubdsim run`) and the NBD server (`ubdsim serve`) see a unit only through
this protocol, so they do not care whether a unit is a COW pair or a raw file, nor which
kernel profile opened it. Offsets and lengths are bytes and always multiples of the 512-byte
sector (the kernel's request granularity); front ends do their own read-modify-write for
finer guest I/O, the way the page cache does above the real driver.
"""
from __future__ import annotations

from typing import Protocol

SECTOR_SIZE = 512


class BlockDevice(Protocol):
    """One opened ubd unit as the kernel's block layer sees it."""

    @property
    def size(self) -> int:
        """Bytes the device exposes (ubd_kern.c ubd_file_size(), rounded per profile)."""

    @property
    def readonly(self) -> bool:
        """True for flag r, or after the EROFS/EACCES fallback to a read-only open."""

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset` (sector-aligned, within size)."""

    def write(self, offset: int, data: bytes) -> None:
        """Write sector-aligned `data` at `offset` (within size); UbdError on failure."""

    def flush(self) -> None:
        """A guest flush, with the profile's semantics (6.1: fsync of the first fd only)."""

    def discard(self, offset: int, length: int) -> None:
        """Discard a sector-aligned range; UbdError(errno=EOPNOTSUPP) where unsupported."""

    def close(self) -> None:
        """Release the host files and locks."""
