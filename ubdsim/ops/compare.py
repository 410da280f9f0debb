"""Do two devices show a guest the same bytes? (`ubdsim compare`, after `qemu-img compare`.)

qemu-img compare (QEMU 7.2, qemu-img.c img_compare(), checked against the installed binary):
- walks both images by block status; a range that both know reads as zeros is equal, a range
  allocated in one only must read as zeros in the other, ranges allocated in both are read
  and compared. The first difference is reported as `Content mismatch at offset N!`, where N
  is the start of the first differing 512-byte sector (a byte changed at 1000 gives 512),
  never before the start of the range being checked;
- different sizes: the common part is compared first; if it is equal it prints
  `Warning: Image size mismatch!` and the larger image's extra part must read as zeros
  (else `Content mismatch at offset N!`);
- `-s` (strict): different sizes fail at once (`Strict mode: Image size mismatch!`), and so
  does a range whose block status differs (`Strict mode: Offset N block status mismatch!`);
- equal: `Images are identical.`; exit 0 same, 1 different, 2 an image cannot be opened,
  4 a read failed (3, a failed block-status query, has no counterpart here).

ubdsim does the same on guest-visible contents (COW + backing, or raw), with the device views'
runs as block status ("zero" = a host hole). It reads only what must be read: a range both
devices read from the same host bytes (two COW files over one backing file, the same COW file
twice) is equal without reading it, holes on both sides are equal, and a range that is a
hole on one side only is read on the other side alone. The result also names the exact first
differing byte, which qemu-img does not print.
"""
from __future__ import annotations

import errno as _errno
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np

from ..cow.image import CHUNK_BYTES
from ..errors import UbdError
from ..fileio import shown
from .device_view import DeviceView, SourceRun, open_device, same_host_range

SECTOR = 512                     # qemu-img compare's granularity when it names an offset

SAME, DIFFERENT = 0, 1           # qemu-img compare's exit codes
OPEN_FAILED, READ_FAILED = 2, 4

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CompareResult:
    """What `ubdsim compare` found (its `--json` object)."""

    a: str
    b: str
    size_a: int
    size_b: int
    strict: bool
    identical: bool
    size_mismatch: bool
    reason: str | None             # None, "content", "size" or "block_status"
    offset: int | None             # as qemu-img prints it: the first differing sector's start
    first_differing_byte: int | None
    bytes_read: int                # host bytes read (both sides)
    bytes_skipped: int             # device bytes judged equal without reading either side
    seconds: float

    @property
    def exit_code(self) -> int:
        return SAME if self.identical else DIFFERENT

    def as_dict(self) -> dict:
        return {**asdict(self), "exit_code": self.exit_code}


class CompareError(UbdError):
    """A compare that could not be made; `exit_code` is qemu-img compare's for the failure."""

    def __init__(self, message: str, exit_code: int, *, errno: int | None = None) -> None:
        super().__init__(message, errno=errno)
        self.exit_code = exit_code


def _open(path: str, backing: str | None) -> DeviceView:
    """open_device(), every failure made exit status 2 (qemu-img: error opening an image)."""
    try:
        return open_device(path, backing)
    except UbdError as err:
        raise CompareError(err.message, OPEN_FAILED, errno=err.errno) from None
    except OSError as err:
        raise CompareError(f"could not open '{shown(err.filename or path)}': {err.strerror}",
                           OPEN_FAILED, errno=err.errno) from None


class _Difference(Exception):
    def __init__(self, reason: str, byte: int, region_start: int) -> None:
        self.reason = reason
        self.byte = byte
        # qemu-img names the sector, counted from the start of the range it was checking.
        self.offset = byte if reason == "block_status" else \
            max(region_start, byte // SECTOR * SECTOR)


def _segments(a: Iterator[SourceRun], b: Iterator[SourceRun]
              ) -> Iterator[tuple[int, int, SourceRun, SourceRun]]:
    """(lo, hi, run_a, run_b) over the common cover of two run streams, in order."""
    ra, rb = next(a, None), next(b, None)
    while ra is not None and rb is not None:
        lo, hi = max(ra.start, rb.start), min(ra.end, rb.end)
        if hi > lo:
            yield lo, hi, ra, rb
        if ra.end <= hi:
            ra = next(a, None)
        if rb.end <= hi:
            rb = next(b, None)


class _Comparer:
    def __init__(self, a: DeviceView, b: DeviceView, strict: bool, chunk: int,
                 progress: Progress | None) -> None:
        self.a, self.b = a, b
        self.strict = strict
        self.chunk = chunk
        self.progress = progress
        self.total = max(a.size, b.size)
        self.read = self.skipped = 0
        self.buf_a = memoryview(bytearray(chunk))
        self.buf_b = memoryview(bytearray(chunk))

    def _tick(self, done: int) -> None:
        if self.progress:
            self.progress(done, self.total)

    def common(self, end: int) -> None:
        """Compare device bytes [0, end) of both devices."""
        for lo, hi, ra, rb in _segments(self.a.runs(0, end), self.b.runs(0, end)):
            if self.strict and ra.hole != rb.hole:
                raise _Difference("block_status", lo, 0)
            if (ra.hole and rb.hole) or same_host_range(ra, rb, lo):
                self.skipped += hi - lo
            elif ra.hole:
                self._must_be_zero(self.b, rb, lo, hi, 0)
            elif rb.hole:
                self._must_be_zero(self.a, ra, lo, hi, 0)
            else:
                self._both(ra, rb, lo, hi)
            self._tick(hi)

    def extra(self, view: DeviceView, start: int) -> None:
        """The larger device's bytes past the smaller's end must read as zeros."""
        for run in view.runs(start, view.size):
            if run.hole:
                self.skipped += run.length
            else:
                self._must_be_zero(view, run, run.start, run.end, start)
            self._tick(run.end)

    def _must_be_zero(self, view: DeviceView, run: SourceRun, lo: int, hi: int,
                      region: int) -> None:
        for offset in range(lo, hi, self.chunk):
            n = min(self.chunk, hi - offset)
            view.read_run_into(run, self.buf_a[:n], offset)
            self.read += n
            nonzero = np.flatnonzero(np.frombuffer(self.buf_a[:n], dtype=np.uint8))
            if len(nonzero):
                raise _Difference("content", offset + int(nonzero[0]), region)

    def _both(self, ra: SourceRun, rb: SourceRun, lo: int, hi: int) -> None:
        for offset in range(lo, hi, self.chunk):
            n = min(self.chunk, hi - offset)
            self.a.read_run_into(ra, self.buf_a[:n], offset)
            self.b.read_run_into(rb, self.buf_b[:n], offset)
            self.read += 2 * n
            left = np.frombuffer(self.buf_a[:n], dtype=np.uint8)
            right = np.frombuffer(self.buf_b[:n], dtype=np.uint8)
            if not np.array_equal(left, right):
                raise _Difference("content", offset + int(np.flatnonzero(left != right)[0]), 0)


def compare_devices(a: str, b: str, *, backing_a: str | None = None,
                    backing_b: str | None = None, strict: bool = False,
                    chunk_bytes: int = CHUNK_BYTES, progress: Progress | None = None
                    ) -> CompareResult:
    """Compare the guest-visible contents of devices `a` and `b` (see the module docstring).

    Raises CompareError (exit_code 2) when a device cannot be opened, (4) when a read fails.
    """
    started = time.monotonic()
    with _open(a, backing_a) as view_a, _open(b, backing_b) as view_b:
        comparer = _Comparer(view_a, view_b, strict, chunk_bytes, progress)
        common = min(view_a.size, view_b.size)
        mismatch = view_a.size != view_b.size
        difference: _Difference | None = None
        try:
            if strict and mismatch:
                difference = _Difference("size", common, common)
            else:
                comparer.common(common)
                if mismatch:
                    larger = view_a if view_a.size > view_b.size else view_b
                    comparer.extra(larger, common)
        except _Difference as found:
            difference = found
        except OSError as err:
            raise CompareError(f"error while reading: {err.strerror}", READ_FAILED,
                               errno=err.errno or _errno.EIO) from None
        return CompareResult(
            a=a, b=b, size_a=view_a.size, size_b=view_b.size, strict=strict,
            identical=difference is None, size_mismatch=mismatch,
            reason=difference.reason if difference else None,
            offset=difference.offset if difference and difference.reason != "size" else None,
            first_differing_byte=difference.byte if difference and difference.reason == "content"
            else None,
            bytes_read=comparer.read, bytes_skipped=comparer.skipped,
            seconds=round(time.monotonic() - started, 6))


__all__ = ["CompareError", "CompareResult", "compare_devices", "SAME", "DIFFERENT",
           "OPEN_FAILED", "READ_FAILED"]
