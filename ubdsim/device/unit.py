"""One opened ubd unit: the I/O path from a block request to host files.

From: `arch/um/drivers/ubd_kern.c` ubd_map_req(), cowify_req(), cowify_bitmap(),
ubd_alloc_req(), do_io(), update_bitmap() [6.1], and the 2.4.20 cowify_req() as the spec
describes it. A request (one `read`/`write`/`discard` call) is cut into segments the way the
block layer hands bio_vecs to the driver (one page each, from the request's start: what a
page-aligned guest buffer gives). For a COW unit, the kernel first maps EVERY segment of the
request (sets the bits in its in-memory bitmap and snapshots the two bitmap words each segment
will write back), then for each segment writes the data and then those words. ubdsim writes
the same final bytes with two kinds of host write per call (all the data, then the union of
those words, see `Unit.write`), and reports the kernel's segment-by-segment steps as events.
What matters for crash states is kept: data reaches the file before the bits that mark it, so
a crash can leave data without its bit, never (on an ordering host) a bit without its data.

Reads reproduce 6.1's do_io() arithmetic, bugs included (both measured with linux.uml): a COW
unit's request is at most 64 sectors; after each segment the request offset advances by the
LAST RUN's length, so once a segment mixes set and clear bits every later segment of that
request reads from a shifted offset; and a run cut by the end of its file re-reads at the
same offset, repeating the tail bytes instead of zero-filling. 2.4 has neither.

The in-memory bitmap is the kernel's vmalloc'ed copy: loaded once at open, authoritative for
reads, and written to the file only word pair by word pair. It lives in an anonymous mmap
(zero pages cost nothing), is loaded skipping holes, and is larger than `bitmap_len` so the
2.4 write-back without an end guard can read (and write to the file) words past the bitmap,
as the kernel did.
"""
from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..cow import bitmap as bits
from ..cow.header import CowHeader
from ..cow.sizes import Geometry
from ..errors import DeviceIOError, UbdError
from ..profiles import Profile
from .api import SECTOR_SIZE
from .events import EventBus
from .hostio import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, data_extents,
                     fallocate, pread_full, pread_like_do_io, pwrite_once, pwrite_segments)

if TYPE_CHECKING:
    from .chain import ChainStack

# ubd_kern.c UBD_MAX_REQUEST [6.1]: 8 * sizeof(long) sectors per discard/zeroes request.
MAX_DISCARD_SECTORS = 64


@dataclass
class CowState:
    """The `cow` part of the kernel's struct ubd: backing fd and the bitmap."""

    header: CowHeader
    geometry: Geometry
    backing_path: str
    backing_fd: int
    bitmap: np.ndarray          # in-memory bitmap (uint8), longer than bitmap_len
    bitmap_map: mmap.mmap
    # [--chain, ubdsim's own] the backing file's read-only layers (device/chain.py ChainStack):
    # unmarked sectors are read from it instead of pread from backing_fd. None: the kernel's.
    lower: "ChainStack | None" = None

    def release(self) -> None:
        """Free the bitmap (the numpy view must go first: mmap refuses to close under it),
        and close the chain's layers if there are any."""
        self.bitmap = None  # type: ignore[assignment]
        self.bitmap_map.close()
        if self.lower is not None:
            self.lower.close()
            self.lower = None

    def read_lower(self, length: int, offset: int) -> bytes:
        """[--chain] Device bytes from the layers below, read as a plain device."""
        try:
            return self.lower.read(offset, length)  # type: ignore[union-attr]
        except OSError as err:
            raise DeviceIOError(f"read of a lower layer at {offset} failed: {err.strerror}",
                                errno=err.errno) from None


def load_bitmap(fd: int, geometry: Geometry, word: int) -> tuple[np.ndarray, mmap.mmap]:
    """read_cow_bitmap(): bitmap_len bytes at bitmap_offset into fresh (zeroed) memory.

    Only the file's data extents are read, so a fresh bitmap of a 1 TiB device costs nothing.
    The buffer covers every sector's bit plus two spare words, rounded to pages like vmalloc.
    """
    sectors = geometry.sectors
    need = max(geometry.bitmap_len, ((max(sectors - 1, 0)) // (8 * word) + 2) * word)
    length = -(-max(need, 1) // mmap.PAGESIZE) * mmap.PAGESIZE
    region = mmap.mmap(-1, length)
    array = np.frombuffer(region, dtype=np.uint8)
    start, end = geometry.bitmap_offset, geometry.bitmap_offset + geometry.bitmap_len
    for offset, size in data_extents(fd, start, end):
        chunk = pread_full(fd, size, offset)
        array[offset - start:offset - start + size] = np.frombuffer(chunk, dtype=np.uint8)
    return array, region


def pair_word(start: int, word_bits: int, guard: int | None) -> int:
    """cowify_bitmap(): the first word of the pair a segment starting at device byte
    `start` writes back: its first sector's word, one word earlier at [6.1]'s `guard`."""
    index = (start >> 9) // word_bits
    return index - 1 if index == guard else index


@dataclass(frozen=True)
class FreshRun:
    """The segments of a write over sectors whose bits were all clear: device bytes
    [offset, end) cut every `segment_bytes`, each writing back the word pair at its first
    sector's word ([6.1] at `guard`, the last word, one word earlier: cowify_bitmap()).

    Iterating gives the (start, size, first word) triples _cowify_request() lists for any
    other write; `one_span` gives _word_spans() their union at once, so a fresh 1 MiB write
    does not build and merge 256 triples (measured 0.15 ms of Python per MiB, about the
    pwrite of a MiB the host already holds).
    """

    offset: int
    end: int
    segment_bytes: int
    word_bits: int
    guard: int | None

    def _word(self, start: int) -> int:
        return pair_word(start, self.word_bits, self.guard)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for start in range(self.offset, self.end, self.segment_bytes):
            yield start, min(self.segment_bytes, self.end - start), self._word(start)

    def __bool__(self) -> bool:
        return self.end > self.offset

    @property
    def one_span(self) -> tuple[int, int] | None:
        """(first word, last word) of the merged pairs, None where they may not be one span.

        _word_spans() merges a pair into the run before it when its word is at most two
        past the run's last pair. With segments no longer than a word's sectors, one
        segment's first word is at most one past the one before, and the guard only moves
        the last word down by one: every pair merges, the first segment's word is the
        lowest and the last segment's the highest."""
        if self.segment_bytes >> 9 > self.word_bits:
            return None
        last_start = self.offset + (self.end - 1 - self.offset) // self.segment_bytes \
            * self.segment_bytes
        first, last = self._word(self.offset), self._word(last_start)
        return min(first, last), max(first, last) + 1


@dataclass
class _Segment:
    """One mapped segment: device offset, length, and its pending bitmap write-back."""

    offset: int
    length: int
    words_offset: int | None = None   # file offset of the write-back (None: bits were set)
    words: bytes = b""


class Unit:
    """An opened unit (implements ubdsim.device.api.BlockDevice).

    Build one with `ubdsim.device.open.open_unit()`. `messages` holds the kernel log lines
    its open printed; `cow` is None for a raw unit.
    """

    def __init__(self, *, number: int, profile: Profile, path: str, fd: int, writable: bool,
                 sync: bool, size: int, cow: CowState | None, no_trim: bool, events: EventBus,
                 messages: tuple[str, ...] = ()) -> None:
        self.number = number
        self.profile = profile
        self.path = path
        self.fd = fd
        self._writable = writable
        self.sync = sync
        self._size = size
        self.cow = cow
        self.no_trim = no_trim
        self.events = events
        self.messages = messages
        self.closed = False

    # -- BlockDevice -------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self._size

    @property
    def readonly(self) -> bool:
        return not self._writable

    @property
    def backing_path(self) -> str | None:
        return self.cow.backing_path if self.cow else None

    def read(self, offset: int, length: int) -> bytes:
        """do_io() REQ_OP_READ: clear-bit runs from the backing file, set-bit runs from the COW.

        The range is one request (a COW unit's requests are cut at the profile's
        `cow_request_sectors`), served segment by segment with the kernel's own arithmetic:
        [6.1] the offset drift after a mixed segment and the re-read at EOF included.
        """
        self._check(offset, length)
        if self.events.io_active:
            self.events.emit("request", self.number, op="read", offset=offset, length=length)
        fast = self._read_runs(offset, length)
        if fast is not None:
            return fast
        rules = self.profile.device
        limit = rules.cow_request_sectors if self.cow is not None else None
        step = limit * SECTOR_SIZE if limit else max(length, 1)
        out = bytearray(length)
        for request in range(offset, offset + length, step):
            self._read_request(request, min(step, offset + length - request), out, request - offset)
        return bytes(out)

    def read_uncut(self, offset: int, length: int) -> bytes | None:
        """What read() gives for [offset, offset+length) cut into requests anywhere, in one
        host read, where the cut cannot matter: every sector on the same side of the
        bitmap (one run, so no [6.1] drift inside any request), nobody watching requests
        (no events, no injector), no --chain layer, no host error. The page cache's
        readahead (a bio of up to 256 pages, 4 requests per 32 pages on a COW unit) reads
        this way. None: read it request by request, which also prints what a failing one
        prints."""
        events, cow = self.events, self.cow
        if events.io_active or events.injector is not None or self.closed:
            return None
        if cow is not None and cow.lower is not None:
            return None
        if offset < 0 or (offset | length) % SECTOR_SIZE or offset + length > self._size:
            return None
        if cow is not None and length:
            count = length // SECTOR_SIZE
            clear = self._clear_bits(offset // SECTOR_SIZE, count)
            if clear and clear != (1 << count) - 1:
                return None
        try:
            return self._read_runs(offset, length)
        except UbdError:
            return None

    def _read_runs(self, offset: int, length: int) -> bytes | None:
        """The same bytes with one pread per run, when the kernel's per-segment arithmetic
        cannot make a difference: no run boundary inside a segment ([6.1] drift) and no run
        reaching past its file's end ([6.1] re-read). None: take the segment-by-segment path."""
        rules = self.profile.device
        cow = self.cow
        sector, count = offset // SECTOR_SIZE, length // SECTOR_SIZE
        if cow is None:
            runs = [(False, sector, count)]
        else:
            clear = self._clear_bits(sector, count)
            if count and (clear == 0 or clear == (1 << count) - 1):
                runs = [(clear == 0, sector, count)]          # the common case: one run
            else:
                runs = bits.iter_runs(cow.bitmap, sector, count)
        plan = []
        for allocated, sector, count in runs:
            start = sector * SECTOR_SIZE
            if rules.read_offset_drift and (start - offset) % rules.segment_bytes:
                return None
            if allocated:
                fd, file_offset = self.fd, cow.geometry.data_offset + start
            else:
                fd, file_offset = (cow.backing_fd if cow else self.fd), start
            lower = not allocated and cow is not None and cow.lower is not None
            if (rules.short_read_rereads and not lower
                    and file_offset + count * SECTOR_SIZE > os.fstat(fd).st_size):
                return None
            plan.append((allocated, fd, start, file_offset, count * SECTOR_SIZE))
        parts = []
        for allocated, fd, start, file_offset, size in plan:
            lower = not allocated and cow is not None and cow.lower is not None
            if self.events.injector is not None and not lower:
                self.events.injector.host_call(self, "read", fd, file_offset, size)
            try:
                parts.append(cow.read_lower(size, file_offset) if lower
                             else pread_full(fd, size, file_offset))
            except OSError as err:
                raise DeviceIOError(f"read at {file_offset} failed: {err.strerror}",
                                    errno=err.errno) from None
            if self.events.io_active:
                self.events.emit("read", self.number,
                                 source="raw" if cow is None else ("cow" if allocated else "backing"),
                                 offset=start, file_offset=file_offset, length=size)
        return b"".join(parts)

    def _read_request(self, offset: int, length: int, out: bytearray, at: int) -> None:
        rules = self.profile.device
        cow = self.cow
        segment_bytes = rules.segment_bytes
        base = offset                      # req->offset
        for segment in range(offset, offset + length, segment_bytes):
            size = min(segment_bytes, offset + length - segment)
            if cow is None:
                runs = [(False, segment // SECTOR_SIZE, size // SECTOR_SIZE)]
            else:
                runs = bits.iter_runs(cow.bitmap, segment // SECTOR_SIZE, size // SECTOR_SIZE)
            last = size
            for allocated, sector, count in runs:
                within = sector * SECTOR_SIZE - segment
                run_length = count * SECTOR_SIZE
                # ubd_alloc_req(): fds[1]/offsets[1] = COW file at data_offset; fds[0] = the
                # backing file (or the raw file) at 0.
                if allocated:
                    fd, file_offset = self.fd, base + cow.geometry.data_offset + within
                else:
                    fd, file_offset = (cow.backing_fd if cow else self.fd), base + within
                if not allocated and cow is not None and cow.lower is not None:
                    data, last = cow.read_lower(run_length, file_offset), run_length
                else:
                    data, last = self._pread(fd, run_length, file_offset)
                start = at + segment - offset + within
                out[start:start + run_length] = data
                if self.events.io_active:
                    self.events.emit("read", self.number,
                                     source="raw" if cow is None else ("cow" if allocated else "backing"),
                                     offset=segment + within, file_offset=file_offset,
                                     length=run_length)
            # do_io(): `req->offset += len`, len being the last run's (6.1's drift), where a
            # correct driver adds the segment's length.
            base += last if rules.read_offset_drift else size

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """do_io() REQ_OP_WRITE: every byte to the COW file (or the raw file), then the bitmap.

        The kernel writes each segment's data and then its two bitmap words (512 + 512
        syscalls per MiB). ubdsim leaves the files with the same bytes in two steps: one
        pwrite of all the data, then one pwrite per contiguous span of the words the kernel
        would have written, taken from the in-memory bitmap after the whole request was
        mapped. Identical, because every bit a request sets lies in a word pair that request
        writes back, so the last write of any word carries its final in-memory value (see
        `_cowify_request`). Data still reaches the file before any bit that marks it, so a
        crash between the two steps leaves data without its bit, never a bit without data.
        """
        length = len(data)
        self._check(offset, length, writing=True)
        if self.events.io_active:
            self.events.emit("request", self.number, op="write", offset=offset, length=length,
                             data=data)
        if self.cow is None:
            self._pwrite(self.fd, data, offset)
            if self.events.io_active:
                self.events.emit("hostwrite", self.number, file=self.path, file_offset=offset,
                                 data=data)
                self.events.emit("write", self.number, target="raw", offset=offset,
                                 file_offset=offset, length=length)
            return
        if not length:
            return
        if self.events.io_active or self.events.injector is not None:
            self._write_segments(offset, data)
            return
        geometry = self.cow.geometry
        newly = self._clear_bits(offset // SECTOR_SIZE, length // SECTOR_SIZE)
        # Every bit already set: no segment writes a word back (cowify_bitmap() found none
        # clear), so there is nothing to map.
        segments = self._cowify_request(offset, length) if newly else []
        try:
            self._pwrite(self.fd, data, geometry.data_offset + offset)
        except DeviceIOError as err:
            self._finish_failed(offset, data, segments, newly, err.written)
            raise
        for file_offset, words in self._word_spans(segments):
            self._pwrite(self.fd, words, file_offset, "bitmap")

    def _write_segments(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """The kernel's own host calls, in its order, for while the lab records or injects:
        ubd_map_req() cowifies every segment of a request (setting its bits and snapshotting
        its word pair, cowify_bitmap()), then io_thread() runs do_io() per segment: its data
        pwrite, then update_bitmap()'s pwrite of that snapshot, stopping at the first failure
        (the request's later bits stay set in memory). So every state a crash can leave
        inside a multi-segment request is in the log, and --inject counts calls as the
        kernel makes them. The files end the same as after write()'s two-step path."""
        rules = self.profile.device
        step = rules.cow_request_sectors * SECTOR_SIZE if rules.cow_request_sectors else len(data)
        data_offset = self.cow.geometry.data_offset
        view = memoryview(data).cast("B")
        end = offset + len(view)
        for request in range(offset, end, step):
            request_end = min(request + step, end)
            segments = [self._cowify(start, min(rules.segment_bytes, request_end - start))
                        for start in range(request, request_end, rules.segment_bytes)]
            for segment in segments:
                piece = view[segment.offset - offset:segment.offset - offset + segment.length]
                try:
                    self._pwrite(self.fd, piece, data_offset + segment.offset)
                except DeviceIOError as err:
                    if err.written and self.events.io_active:
                        self.events.emit("hostwrite", self.number, file=self.path,
                                         file_offset=data_offset + segment.offset,
                                         data=piece[:err.written])
                    raise
                if self.events.io_active:
                    self.events.emit("hostwrite", self.number, file=self.path,
                                     file_offset=data_offset + segment.offset, data=piece)
                    self.events.emit("write", self.number, target="cow", offset=segment.offset,
                                     file_offset=data_offset + segment.offset,
                                     length=segment.length)
                self._write_back(segment)

    def _finish_failed(self, offset: int, data: bytes | bytearray | memoryview,
                       segments: list[tuple[int, int, int | None]], newly: int,
                       written: int) -> None:
        """A data write failed after `written` bytes: what the kernel's per-segment loop left.
        io_thread() runs do_io() per segment and stops at the first failure; each segment
        before it wrote its data and then update_bitmap() wrote its word pair as
        cowify_bitmap() snapshotted it (this request's bits up to that segment; the later
        ones, still clear then, are not in it). The in-memory bits all stay set, as the
        kernel's do: a later write of the same words writes them to the file."""
        geometry = self.cow.geometry
        if written and self.events.io_active:
            self.events.emit("hostwrite", self.number, file=self.path,
                             file_offset=geometry.data_offset + offset,
                             data=memoryview(data)[:written])
        word = self.profile.device.bitmap_word
        first_sector = offset // SECTOR_SIZE
        memory = self.cow.bitmap_map
        for start, size, index in segments:
            end = (start + size) // SECTOR_SIZE
            if (end - first_sector) * SECTOR_SIZE > written:
                break
            if index is None:
                continue
            later = (newly >> (end - first_sector)) << end      # by absolute sector
            lo, hi = max(index, 0) * word, (index + 2) * word    # word -1 lies before the bitmap
            words = int.from_bytes(memory[lo:hi], "little") & ~(later >> (lo * 8))
            raw = bytes(lo - index * word) + words.to_bytes(hi - lo, "little")
            self._pwrite(self.fd, raw, geometry.bitmap_offset + index * word, "bitmap")
            if self.events.io_active:
                self.events.emit("hostwrite", self.number, file=self.path,
                                 file_offset=geometry.bitmap_offset + index * word, data=raw)

    def discard(self, offset: int, length: int) -> None:
        """REQ_OP_DISCARD [6.1]: punch the range (in the COW data area, setting the bits)."""
        self._falloc("discard", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)

    def write_zeroes(self, offset: int, length: int) -> None:
        """REQ_OP_WRITE_ZEROES [6.1]: FALLOC_FL_ZERO_RANGE on the same target as a discard."""
        self._falloc("zeroes", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)

    def flush(self) -> None:
        """REQ_OP_FLUSH: nothing reaches the host, under every profile. [6.1]
        ubd_submit_request() maps a flush with no I/O descriptor (segs = 0) and io_thread()
        runs do_io() once per descriptor, so do_io()'s flush branch (os_sync_file(fds[0]),
        which would fdatasync the BACKING file of a COW unit) is never reached: measured with
        linux.uml (tests/kernel_ref/test_host_syncs.py). [2.4] the driver has no flush at all.
        Guest writes become durable only through O_SYNC opens (flag s, ubd=sync)."""
        self._check_open()
        if self.events.io_active:
            self.events.emit("flush", self.number)

    def close(self) -> None:
        """ubd_close_dev(): close the files (their fcntl locks go with them)."""
        if self.closed:
            return
        self.closed = True
        os.close(self.fd)
        if self.cow is not None:
            os.close(self.cow.backing_fd)
            self.cow.release()
        if self.events.active:
            self.events.emit("close", self.number, file=self.path)

    def __enter__(self) -> "Unit":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection helpers (tools and tests) ------------------------------------------
    def bitmap_bytes(self, length: int | None = None) -> bytes:
        """The in-memory bitmap's first `length` bytes (default: bitmap_len)."""
        if self.cow is None:
            return b""
        length = self.cow.geometry.bitmap_len if length is None else length
        return self.cow.bitmap[:length].tobytes()

    # -- the kernel's steps -------------------------------------------------------------
    def _cowify_request(self, offset: int,
                        length: int) -> "list[tuple[int, int, int | None]] | FreshRun":
        """ubd_map_req() + cowify_req() for a whole write: set the bits, and say for each
        segment (device offset, length, first word of its write-back or None) what
        cowify_bitmap() decided. Segments are cut as the kernel cuts them: requests of
        `cow_request_sectors`, each in `segment_bytes` pieces from its own start.

        A segment writes back only if one of its bits was clear; those bits all lie in its
        word pair ([6.1] at the last word the pair steps back one word, so a sector past
        that word, which only the V1/V2 rounding bug creates, is set and not written, as in
        the kernel). Segments do not overlap, so testing every segment against the bitmap
        as it was before the call is what the kernel's request-by-request test gives.
        """
        cow = self.cow
        assert cow is not None
        rules = self.profile.device
        word_bits = rules.bitmap_word * 8
        guard = self.guard_word()
        sector, count = offset // SECTOR_SIZE, length // SECTOR_SIZE
        first_byte, window, shift = self._bit_window(sector, count)
        full = (1 << count) - 1
        clear = ~(window >> shift) & full
        limit = rules.cow_request_sectors
        step = limit * SECTOR_SIZE if limit else length
        segment_bytes = rules.segment_bytes
        end = offset + length
        segments: list[tuple[int, int, int | None]] | FreshRun = []
        if clear and clear == full and step % segment_bytes == 0:
            # A fresh range (the common case, and the costly one): every segment writes back,
            # and every request but the last is whole segments.
            segments = FreshRun(offset, end, segment_bytes, word_bits, guard)
        for request in range(offset, end, step) if not segments else ():
            request_end = min(request + step, end)
            for start in range(request, request_end, segment_bytes):
                size = min(segment_bytes, request_end - start)
                index = None
                if clear:
                    within = (start - offset) >> 9
                    if (clear >> within) & ((1 << (size >> 9)) - 1):
                        index = pair_word(start, word_bits, guard)
                segments.append((start, size, index))
        if clear:
            window |= full << shift
            size = (sector + count + 7 >> 3) - first_byte
            cow.bitmap_map[first_byte:first_byte + size] = window.to_bytes(size, "little")
        return segments

    def guard_word(self) -> int | None:
        """[6.1] cowify_bitmap()'s guard: the index of the bitmap's last word, whose pair
        steps back one word; None where the profile has none ([2.4])."""
        rules = self.profile.device
        if not rules.bitmap_end_guard:
            return None
        return -(-self.cow.geometry.bitmap_len // rules.bitmap_word) - 1  # type: ignore[union-attr]

    def _bit_window(self, sector: int, count: int) -> tuple[int, int, int]:
        """The in-memory bitmap bytes holding sectors [sector, sector+count) as one integer:
        (first byte, the integer, the bit of `sector` in it). A request's few hundred bits
        are cheaper to test and set as a Python int on the mmap than through numpy."""
        first_byte = sector >> 3
        window = self.cow.bitmap_map[first_byte:(sector + count + 7) >> 3]  # type: ignore[union-attr]
        return first_byte, int.from_bytes(window, "little"), sector - (first_byte << 3)

    def _clear_bits(self, sector: int, count: int) -> int:
        """Bit i set: sector+i is clear in the in-memory bitmap."""
        _, window, shift = self._bit_window(sector, count)
        return ~(window >> shift) & ((1 << count) - 1)

    def _word_spans(self, segments: "list[tuple[int, int, int | None]] | FreshRun"
                    ) -> list[tuple[int, bytes]]:
        """update_bitmap()'s writes for `segments`, merged: (file offset, bytes) per run of
        adjacent or overlapping word pairs, with the in-memory bitmap's current words.

        Word pairs that were not written by the kernel stay unwritten (a gap splits a span),
        so words the in-memory copy and the file disagree on (past a V1/V2 bitmap's end)
        are never written where the kernel did not write them."""
        cow = self.cow
        assert cow is not None
        word = self.profile.device.bitmap_word
        spans: list[list[int]] = []
        if isinstance(segments, FreshRun) and segments.one_span is not None:
            spans.append(list(segments.one_span))
            segments = []
        for _start, _size, index in segments:
            if index is None:
                continue
            if spans and index <= spans[-1][1] + 1:
                spans[-1][1] = max(spans[-1][1], index + 1)
            else:
                spans.append([index, index + 1])
        out = []
        memory = cow.bitmap_map
        for first_word, last_word in spans:
            first, stop = first_word * word, (last_word + 1) * word
            if first < 0:
                # A one-word bitmap steps back to word -1: memory before the kernel's vmalloc
                # area. ubdsim reads zeros there (what the kernel reads is undefined).
                words = bytes(-first) + memory[0:stop]
            else:
                words = memory[first:stop]
            out.append((cow.geometry.bitmap_offset + first, words))
        return out

    def _cowify(self, offset: int, length: int) -> _Segment:
        """cowify_bitmap(): set the segment's bits; if any was clear, take the word pair
        starting at the segment's first sector's word ([6.1] stepped back one word at the
        bitmap's last word; [2.4] no guard: the pair may lie past the bitmap)."""
        cow = self.cow
        assert cow is not None
        segment = _Segment(offset, length)
        sector, count = offset // SECTOR_SIZE, length // SECTOR_SIZE
        array = cow.bitmap
        if self._all_set(sector, count):
            return segment
        bits.set_range(array, sector, count)
        rules = self.profile.device
        word = rules.bitmap_word
        index = sector // (word * 8)
        if rules.bitmap_end_guard and index == -(-cow.geometry.bitmap_len // word) - 1:
            index -= 1
        first = index * word
        if first < 0:
            # A one-word bitmap steps back to word -1: memory before the kernel's vmalloc
            # area. ubdsim reads zeros there (what the kernel reads is undefined).
            segment.words = bytes(-first) + array[0:2 * word + first].tobytes()
        else:
            segment.words = array[first:first + 2 * word].tobytes()
        segment.words_offset = cow.geometry.bitmap_offset + first
        return segment

    def _all_set(self, sector: int, count: int) -> bool:
        array = self.cow.bitmap  # type: ignore[union-attr]
        first, last = sector >> 3, (sector + count + 7) >> 3
        window = np.unpackbits(array[first:last], bitorder="little")
        return bool(window[sector - (first << 3):sector - (first << 3) + count].all())

    def _write_back(self, segment: _Segment) -> None:
        """update_bitmap(): one pwrite of the two snapshotted words."""
        if segment.words_offset is None:
            return
        self._pwrite(self.fd, segment.words, segment.words_offset, "bitmap")
        if self.events.io_active:
            self.events.emit("hostwrite", self.number, file=self.path,
                             file_offset=segment.words_offset, data=segment.words)
            self.events.emit("bitmap", self.number, file_offset=segment.words_offset,
                             length=len(segment.words), first_sector=segment.offset // SECTOR_SIZE)

    def _falloc(self, kind: str, mode: int, offset: int, length: int) -> None:
        self._check(offset, length, writing=True)
        if not self.profile.device.supports_discard or self.no_trim:
            # [2.4] no discard in the driver; [6.1] flag t: the queue has no discard limits.
            raise UbdError(f"unit {self.number} does not support {kind}", errno=errno.EOPNOTSUPP)
        if self.events.io_active:
            self.events.emit("request", self.number, op=kind, offset=offset, length=length)
        chunk = MAX_DISCARD_SECTORS * SECTOR_SIZE
        position, end = offset, offset + length
        while position < end:
            size = min(chunk, end - position)
            if self.cow is None:
                segment, file_offset = None, position
            else:
                segment = self._cowify(position, size)
                file_offset = self.cow.geometry.data_offset + position
            try:
                fallocate(self.fd, mode, file_offset, size)
            except OSError as err:
                raise DeviceIOError(f"{kind} at {file_offset} failed: {err.strerror}",
                                    errno=err.errno) from None
            if self.events.io_active:
                self.events.emit(kind, self.number, offset=position, file_offset=file_offset,
                                 length=size)
            if segment is not None:
                self._write_back(segment)
            position += size

    def _check_open(self) -> None:
        if self.closed:
            raise UbdError(f"unit {self.number} is closed", errno=errno.EBADF)

    def _check(self, offset: int, length: int, writing: bool = False) -> None:
        self._check_open()
        if offset % SECTOR_SIZE or length % SECTOR_SIZE or offset < 0 or length < 0:
            raise UbdError(f"request {offset}+{length} is not sector-aligned", errno=errno.EINVAL)
        if offset + length > self._size:
            raise DeviceIOError(f"request {offset}+{length} runs past the device's end "
                                f"({self._size} bytes)", errno=errno.EIO)
        if writing and not self._writable:
            raise UbdError(f"unit {self.number} is read-only", errno=errno.EROFS)

    def _pread(self, fd: int, length: int, offset: int) -> tuple[bytes, int]:
        """One run's read: (data, do_io()'s final `len`)."""
        if self.events.injector is not None:
            self.events.injector.host_call(self, "read", fd, offset, length)
        try:
            if self.profile.device.short_read_rereads:
                return pread_like_do_io(fd, length, offset)
            return pread_full(fd, length, offset), length
        except OSError as err:
            raise DeviceIOError(f"read at {offset} failed: {err.strerror}", errno=err.errno) from None

    def _pwrite(self, fd: int, data: bytes | memoryview, offset: int, kind: str = "data") -> None:
        """One host write; `kind` ("data" or "bitmap": the header/bitmap words) is what an
        --inject spec (lab/inject.py) can single out. The injector, when there is one, sees
        the call first: it may fail it, tear it or stop the world after it."""
        if self.events.injector is not None:
            self.events.injector.host_call(self, kind, fd, offset, data)
        try:
            if kind == "data":
                pwrite_segments(fd, data, offset, self.profile.device.segment_bytes)
            else:
                pwrite_once(fd, data, offset)
        except OSError as err:
            failed = DeviceIOError(f"write at {offset} failed: {err.strerror}", errno=err.errno)
            failed.written = getattr(err, "written", 0)
            raise failed from None
