"""What a scenario leaves behind: every file's bytes, length and holes, in a comparable form.

A FileImage keeps the allocated extents (SEEK_DATA/SEEK_HOLE) and their bytes; a hole reads
as zeros. Two normalisations are applied, both to the kernel's and to ubdsim's files:
- the backing path stored in a COW header has the working directory replaced by `$WORK`
  (so a golden capture taken in another directory compares equal);
- the bytes after that path's NUL are zeroed: cow_user.c write_cow_header() [6.1] fills a
  kmalloc'ed header without memset, so the kernel leaves heap garbage there that no
  reader ever looks at (observed: bytes 4096-4099 of a fresh V3 file varied by run);
- the bytes past the bitmap's end that the kernel's bitmap write-back can reach are zeroed
  (but for the real bits of the rounding-bug byte). The kernel keeps a bitmap_len-byte
  vmalloc'ed bitmap and writes back two 64-bit words around a changed bit, stepping back one
  word at the last (ubd_kern.c cowify_bitmap()/update_bitmap() [6.1]), so wherever
  bitmap_len is not a multiple of 8 uninitialised kernel memory lands after the bitmap: V3
  files of 8194 sectors (observed: `54 4e 94` after bitmap byte 1024 in one run, zeros in
  others), and V1/V2 files with the rounding bug, whose trailing sectors' bits lie past the
  bitmap's end (observed: `06 00..` in one run, `46 fb 8d 60` in the next).
"""
from __future__ import annotations

import base64
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from ubdsim.cow.header import read_header
from ubdsim.cow.layouts import HEADER_READ_SIZE
from ubdsim.errors import UbdError
from ubdsim.fileio import data_extents

from .filters import Normaliser

MAX_COMPARED = 256 << 20   # scenarios keep their images small; refuse to load a huge one


@dataclass
class FileImage:
    size: int
    extents: list[tuple[int, int]]
    chunks: list[bytes]            # the bytes of each extent (normalised)

    def content(self) -> bytes:
        """The whole file as a reader sees it (holes as zeros)."""
        if self.size > MAX_COMPARED:
            raise ValueError(f"file of {self.size} bytes is too large to compare here")
        out = bytearray(self.size)
        for (off, length), chunk in zip(self.extents, self.chunks):
            out[off:off + length] = chunk
        return bytes(out)

    def digest(self) -> str:
        return hashlib.sha256(self.content()).hexdigest()

    def to_json(self) -> dict:
        blob = zlib.compress(b"".join(self.chunks), 9)
        return {"size": self.size, "extents": [list(e) for e in self.extents],
                "sha256": self.digest(), "data_zlib_b64": base64.b64encode(blob).decode()}

    @classmethod
    def from_json(cls, data: dict) -> "FileImage":
        blob = zlib.decompress(base64.b64decode(data["data_zlib_b64"]))
        extents = [tuple(e) for e in data["extents"]]
        chunks, pos = [], 0
        for _, length in extents:
            chunks.append(blob[pos:pos + length])
            pos += length
        return cls(size=data["size"], extents=extents, chunks=chunks)


def extents_of(fd: int, size: int) -> list[tuple[int, int]]:
    """Allocated ranges (start, length) by SEEK_DATA/SEEK_HOLE (no holes: one range)."""
    return [(lo, hi - lo) for lo, hi in data_extents(fd, 0, size)]


def snapshot_file(path: Path, normaliser: Normaliser) -> FileImage:
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size > MAX_COMPARED:
            raise ValueError(f"{path}: {size} bytes, too large for kernel_ref")
        extents = extents_of(fd, size)
        chunks = [os.pread(fd, length, off) for off, length in extents]
    image = FileImage(size=size, extents=extents, chunks=chunks)
    _normalise_cow_path(image, normaliser)
    return image


def _normalise_cow_path(image: FileImage, normaliser: Normaliser) -> None:
    head = image.content()[:HEADER_READ_SIZE] if image.size else b""
    try:
        header = read_header(head)
    except UbdError:
        return
    spans = {name: (start, end) for name, start, end in header.layout.field_spans()}
    start, end = spans["backing_file"]
    if end > image.size:
        return
    path = normaliser.path_bytes(header.backing_file)[:end - start - 1]
    field = path + bytes(end - start - len(path))
    _overwrite(image, start, field)
    _mask_bitmap_spill(image, header)


def _mask_bitmap_spill(image: FileImage, header) -> None:
    try:
        geo = header.geometry()
    except (UbdError, ZeroDivisionError):
        return
    word = 8                                             # sizeof(unsigned long) [6.1 x86-64]
    words = -(-geo.bitmap_len // word)
    last = (geo.sectors - 1) // (8 * word) if geo.sectors else 0
    # cowify_bitmap(): words [w, w+1], or [w-1, w] when w is the bitmap's last word
    reach = geo.bitmap_offset + word * (last + 2 if last >= words else words)
    spill = geo.bitmap_offset + geo.bitmap_len          # first byte past the bitmap
    end = min(reach, geo.data_offset, image.size)
    if spill >= end:
        return
    content = image.content()
    real_bits = max(0, min(8, geo.sectors - geo.bitmap_len * 8))   # rounding bug: 1..7
    keep = content[spill] & ((1 << real_bits) - 1)
    _overwrite(image, spill, bytes([keep]) + bytes(end - spill - 1))


def _overwrite(image: FileImage, offset: int, data: bytes) -> None:
    """Replace bytes inside the image (only where extents exist; holes are zeros anyway)."""
    for i, ((off, length), chunk) in enumerate(zip(image.extents, image.chunks)):
        lo, hi = max(off, offset), min(off + length, offset + len(data))
        if lo < hi:
            buf = bytearray(chunk)
            buf[lo - off:hi - off] = data[lo - offset:hi - offset]
            image.chunks[i] = bytes(buf)


def snapshot_dir(work: Path, normaliser: Normaliser, skip: str) -> dict[str, FileImage]:
    """Every regular file under `work` except the scratch folder `skip`."""
    files = {}
    for root, dirs, names in os.walk(work):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == work and d == skip))
        for name in sorted(names):
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                files[str(path.relative_to(work))] = snapshot_file(path, normaliser)
    return files
