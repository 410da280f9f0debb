"""The device a rebooted guest would see in a crash state, as one raw image, kept current.

After a crash the next boot re-reads the COW file's header and bitmap from the host file:
sector s comes from the COW file's data area when its bit is set on disk, else from the
backing file (the in-memory bitmap is gone). DeviceImage holds that device as a sparse raw
file for one unit and updates it as host writes are applied to the rebuilt files
(replay.FileSet) or patched away again (a power-model state): only the device sectors a
write can change are re-read (those of the data-area range it wrote, or every sector whose
bit lies in the bitmap bytes it wrote); a header write or a whole-file record rebuilds the
image through the device view (ops/device_view.DeviceView over the rebuilt COW file and the
verified backing file). A raw unit's image is its rebuilt file.

`digest` identifies the image's content: the XOR of a 128-bit BLAKE2b of every non-zero
sector with its index, updated per changed sector, so two crash states that leave the same
device are checked once.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ..cow import bitmap as bits
from ..cow.header import read_header
from ..cow.image import CowImage
from ..cow.layouts import HEADER_READ_SIZE
from ..device.api import SECTOR_SIZE
from ..device.hostio import pread_full
from ..errors import CowFormatError, UbdError
from ..fileio import copy_range, data_extents
from ..ops.device_view import DeviceView
from .replay import FileSet

ZERO_SECTOR = bytes(SECTOR_SIZE)
REFRESH_CHUNK = 1 << 20


def sector_hash(index: int, data: bytes) -> int:
    if data == ZERO_SECTOR:
        return 0
    return int.from_bytes(hashlib.blake2b(data, digest_size=16,
                                          salt=index.to_bytes(16, "little")).digest(), "little")


@dataclass(frozen=True)
class UnitFiles:
    """What the log says a unit is: its file, COW or raw, its backing file and size."""

    unit: int
    fid: int
    cow: bool
    backing_fid: int | None
    size: int


class DeviceImage:
    """The guest-visible device of one unit in the current state of `files`."""

    def __init__(self, unit: UnitFiles, files: FileSet, path: str,
                 backing_paths: dict[int, str]) -> None:
        self.unit = unit
        self.files = files
        self.path = path
        self.backing_paths = backing_paths        # fid -> a verified copy of that file
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.digest = 0
        self.size = 0
        self.problem: str | None = None           # why there is no device in this state
        self.geometry = None
        self._backing_fd: int | None = None
        self._backing_for: str | None = None
        self.rebuild()

    # -- whole image -------------------------------------------------------------------------
    def rebuild(self) -> None:
        os.ftruncate(self.fd, 0)
        self.digest, self.problem, self.geometry = 0, None, None
        unit, files = self.unit, self.files
        if not unit.cow:
            if not files.exists(unit.fid):
                self._none("the raw file does not exist yet")
                return
            self.size = os.fstat(files.fds[unit.fid]).st_size
            os.ftruncate(self.fd, self.size)
            self._copy_all(files.fds[unit.fid], 0)
            return
        if not files.exists(unit.fid):
            # The next boot creates a fresh COW file: the device is the backing file.
            fd = self._backing(self._backing_path(None))
            if fd is None:
                return
            self.size = unit.size
            os.ftruncate(self.fd, self.size)
            self._copy_all(fd, 0)
            return
        head = pread_full(files.fds[unit.fid], HEADER_READ_SIZE, 0)
        try:
            header = read_header(head)
            geometry = header.geometry()
        except (CowFormatError, UbdError) as err:
            self._none(f"its COW header cannot be read ({err}): the unit would not open")
            return
        bfd = self._backing(self._backing_path(header.backing_path))
        if bfd is None:
            return
        self.geometry = geometry
        self.size = geometry.size
        os.ftruncate(self.fd, self.size)
        image = CowImage.open(files.paths[unit.fid])
        try:
            view = DeviceView(files.paths[unit.fid], "cow", geometry.size, image.fd, image=image,
                              backing=self._backing_for, backing_fd=bfd,
                              backing_bytes=os.fstat(bfd).st_size)
            buffer = bytearray(REFRESH_CHUNK)
            for run in view.runs():
                if run.hole:
                    continue
                for lo in range(run.start, run.end, REFRESH_CHUNK):
                    n = min(REFRESH_CHUNK, run.end - lo)
                    out = memoryview(buffer)[:n]
                    view.read_run_into(run, out, lo)
                    os.pwrite(self.fd, out, lo)
                    self._hash_new(lo, bytes(out))
        finally:
            image.close()

    def _none(self, why: str) -> None:
        self.problem = why
        self.size = 0

    def _backing_path(self, named: str | None) -> str | None:
        """The verified copy of the backing file `named` (the header's), else the unit's."""
        if named is not None:
            for fid, path in self.backing_paths.items():
                if os.path.abspath(named) == self.files.log.files[fid]["path"]:
                    return path
        if self.unit.backing_fid is not None:
            return self.backing_paths.get(self.unit.backing_fid)
        return None

    def _backing(self, path: str | None) -> int | None:
        if path is None:
            self._none("its backing file is not available")
            return None
        if self._backing_for != path:
            if self._backing_fd is not None:
                os.close(self._backing_fd)
            self._backing_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self._backing_for = path
        return self._backing_fd

    def _copy_all(self, src: int, src_base: int) -> None:
        for lo, hi in data_extents(src, src_base, src_base + self.size):
            for at in range(lo, hi, REFRESH_CHUNK):
                n = min(REFRESH_CHUNK, hi - at)
                data = os.pread(src, n, at)
                os.pwrite(self.fd, data, at - src_base)
                self._hash_new(at - src_base, data)

    def _hash_new(self, offset: int, data: bytes) -> None:
        """Add sectors written over zeros (a fresh image) to the digest."""
        first = offset // SECTOR_SIZE
        for i in range(0, len(data), SECTOR_SIZE):
            self.digest ^= sector_hash(first + i // SECTOR_SIZE, data[i:i + SECTOR_SIZE])

    # -- incremental -------------------------------------------------------------------------
    def changed(self, fid: int, lo: int, hi: int, whole: bool = False) -> None:
        """File `fid` changed in bytes [lo, hi) (`whole`: entirely): bring the image along."""
        unit = self.unit
        if fid != unit.fid:
            return
        if whole or self.problem is not None or (unit.cow and self.geometry is None):
            self.rebuild()
            return
        if not unit.cow:
            self._refresh_raw(lo, hi)
            return
        g = self.geometry
        if lo < g.bitmap_offset:
            self.rebuild()                   # the header: geometry or backing may change
            return
        sectors = -(-self.size // SECTOR_SIZE)
        b_lo, b_hi = max(lo, g.bitmap_offset), min(hi, g.bitmap_offset + g.bitmap_len)
        if b_lo < b_hi:
            first = (b_lo - g.bitmap_offset) * 8
            last = min((b_hi - g.bitmap_offset) * 8, sectors)
            if last > first:
                self._refresh_cow(first, last - first)
        d_lo = max(lo, g.data_offset)
        if d_lo < hi:
            first = (d_lo - g.data_offset) // SECTOR_SIZE
            last = min(-(-(hi - g.data_offset) // SECTOR_SIZE), sectors)
            if last > first:
                self._refresh_cow(first, last - first)

    def _refresh_raw(self, lo: int, hi: int) -> None:
        first = lo // SECTOR_SIZE
        last = min(-(-hi // SECTOR_SIZE), -(-self.size // SECTOR_SIZE))
        if last > first:
            self._update(first, last - first, self.files.fds[self.unit.fid], first * SECTOR_SIZE)

    def _refresh_cow(self, first: int, count: int) -> None:
        g = self.geometry
        cow_fd = self.files.fds[self.unit.fid]
        b0 = first // 8
        # Bits past bitmap_len read as clear (the V1/V2 rounding bug: no bit, the backing file).
        length = max(0, min((first + count + 7) // 8, g.bitmap_len) - b0)
        raw = pread_full(cow_fd, length, g.bitmap_offset + b0) if length else b""
        shift = b0 * 8
        for allocated, sector, n in bits.iter_runs(raw, first - shift, count):
            sector += shift
            if allocated:
                self._update(sector, n, cow_fd, g.data_offset + sector * SECTOR_SIZE)
            else:
                self._update(sector, n, self._backing_fd, sector * SECTOR_SIZE)

    def _update(self, sector: int, count: int, src: int, src_offset: int) -> None:
        """Device sectors [sector, sector+count) := `src` bytes at `src_offset` (zeros past
        its end, and past the device's end nothing)."""
        count = min(count, -(-self.size // SECTOR_SIZE) - sector)
        if count <= 0:
            return
        length = min(count * SECTOR_SIZE, self.size - sector * SECTOR_SIZE)
        new = pread_full(src, length, src_offset)
        old = pread_full(self.fd, length, sector * SECTOR_SIZE)
        if new == old:
            return
        os.pwrite(self.fd, new, sector * SECTOR_SIZE)
        for i in range(0, length, SECTOR_SIZE):
            a, b = old[i:i + SECTOR_SIZE], new[i:i + SECTOR_SIZE]
            if a != b:
                index = sector + i // SECTOR_SIZE
                self.digest ^= sector_hash(index, a) ^ sector_hash(index, b)

    # -- handing it out ----------------------------------------------------------------------
    def copy_to(self, fd: int) -> None:
        """The image into the empty file `fd` (sparse: only its data extents)."""
        os.ftruncate(fd, 0)
        os.ftruncate(fd, self.size)
        for lo, hi in data_extents(self.fd, 0, self.size):
            copy_range(self.fd, fd, hi - lo, lo, lo)

    def close(self) -> None:
        for fd in (self.fd, self._backing_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.fd, self._backing_fd = -1, None


__all__ = ["DeviceImage", "UnitFiles", "sector_hash"]
