"""Guest program: every call that acts on a block device's page cache, on pages whose bytes
show how they were read.

Run as `python3 cache_calls.py [SCENARIO...]` (default: all, in order) with /dev/ubda and
/dev/ubdb COW units and /dev/ubdc a COW unit with flag t (no discard). Each scenario works in
its own 1 MiB region of a unit and starts by making every page of that region mix COW and
backing sectors (sector 3 of each page written with O_DIRECT), then closes every descriptor,
so the page cache is empty (kill_bdev() at the last close). On 6.1 a multi-page read request
over such pages reads its later pages from a drifted offset (ubd_kern.c do_io()), so the
bytes a buffered read returns say which request brought each page in: a page the kernel
keeps cached and ubdsim reads again (or the other way round) shows as different digests.

Every line printed is a call's result (`ok`, a value or `errno NAME`) or one digest per 4 KiB
page of a read, so the kernel's and ubdsim's transcripts can be compared line by line.
"""
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import struct
import sys

PAGE = 4096
REGION = 1 << 20
A, B, C = "/dev/ubda", "/dev/ubdb", "/dev/ubdc"
MIX_PAGES = 176

POSIX_FADV_NORMAL, POSIX_FADV_RANDOM, POSIX_FADV_SEQUENTIAL = 0, 1, 2
POSIX_FADV_WILLNEED, POSIX_FADV_DONTNEED, POSIX_FADV_NOREUSE = 3, 4, 5
KEEP, PUNCH, NO_HIDE, COLLAPSE, ZERO, INSERT, UNSHARE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
BLKROSET, BLKFLSBUF, BLKRASET = 0x125D, 0x1261, 0x1262
BLKBSZGET, BLKBSZSET = 0x80081270, 0x40081271
BLKDISCARD, BLKSECDISCARD, BLKZEROOUT = 0x1277, 0x127D, 0x127F

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_libc.readahead.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_size_t]
_libc.readahead.restype = ctypes.c_ssize_t
_libc.syscall.restype = ctypes.c_long


def _check(ret):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def fallocate(fd, mode, offset, length):
    return _check(_libc.fallocate(fd, mode, offset, length))


def fadvise(fd, offset, length, advice):
    """The raw fadvise64 system call (glibc's posix_fadvise returns the error instead)."""
    return _check(_libc.syscall(ctypes.c_long(221), ctypes.c_long(fd), ctypes.c_long(offset),
                                ctypes.c_long(length), ctypes.c_long(advice)))


def readahead(fd, offset, count):
    return _check(_libc.readahead(fd, offset, count))


def rng(start, length):
    return struct.pack("QQ", start, length)


def show(label, fn):
    try:
        value = fn()
    except OSError as err:
        value = "errno " + errno.errorcode.get(err.errno, str(err.errno))
    else:
        value = "ok" if value is None else value
    print(f"{label}: {value}", flush=True)


def digests(data):
    return " ".join(hashlib.md5(data[i:i + PAGE]).hexdigest()[:6]
                    for i in range(0, len(data), PAGE)) + f" ({len(data)})"


def read(label, fd, offset, length):
    """A buffered pread, shown page by page."""
    show(label, lambda: digests(os.pread(fd, length, offset)))


def probe(label, fd, offset, pages=8):
    """What the cache holds: the pages read one by one, last first, so every page missing
    from the cache is read as the first page of a request (its true bytes) while a cached
    page shows the bytes the request that brought it in gave it."""
    found = {}
    for page in reversed(range(pages)):
        found[page] = os.pread(fd, PAGE, offset + page * PAGE)
    print(f"{label}: {digests(b''.join(found[p] for p in range(pages)))}", flush=True)


def direct_read(label, path, offset, length):
    """What the device holds (O_DIRECT: no page cache), through a descriptor of its own."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, length)
    try:
        show(label, lambda: digests(bytes(buf[:os.preadv(fd, [buf], offset)])))
    finally:
        os.close(fd)


def direct_write(fd, offset, data, skew=0):
    buf = mmap.mmap(-1, len(data) + PAGE)
    buf[skew:skew + len(data)] = data
    return os.pwritev(fd, [memoryview(buf)[skew:skew + len(data)]], offset)


def mix(path, base, pages=MIX_PAGES):
    """Sector 3 of every page from `base` written with O_DIRECT: each page mixes COW and
    backing sectors. No descriptor of `path` may be open (the cache starts empty)."""
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        for page in range(pages):
            stamp = f"mix {base // REGION} page {page}\n".encode().ljust(512, b"~")
            direct_write(fd, base + page * PAGE + 3 * 512, stamp)
    finally:
        os.close(fd)


# --- posix_fadvise -----------------------------------------------------------------------

def willneed_page0(base):
    """mm/fadvise.c generic_fadvise() WILLNEED: page 0 read in alone, nothing dropped; the
    16 KiB read then finds page 0 cached and reads pages 1.. as a request of their own.
    The control is the same read without the advice (pages 0.. in one request)."""
    fd = os.open(A, os.O_RDONLY)
    show("willneed", lambda: fadvise(fd, base, PAGE, POSIX_FADV_WILLNEED))
    read("read 16k", fd, base, 16384)
    read("read again", fd, base, 16384)
    os.close(fd)
    fd = os.open(A, os.O_RDONLY)
    read("control", fd, base, 16384)
    os.close(fd)


def willneed_ranges(base):
    fd = os.open(A, os.O_RDONLY)
    show("willneed partial page", lambda: fadvise(fd, base + 1000, 100, POSIX_FADV_WILLNEED))
    show("willneed len 0", lambda: fadvise(fd, base + 3 * PAGE, 0, POSIX_FADV_WILLNEED))
    show("willneed 1M", lambda: fadvise(fd, base + 40 * PAGE, 1 << 20, POSIX_FADV_WILLNEED))
    show("willneed at end", lambda: fadvise(fd, os.lseek(fd, 0, os.SEEK_END), PAGE,
                                            POSIX_FADV_WILLNEED))
    show("willneed negative offset", lambda: fadvise(fd, -PAGE, PAGE, POSIX_FADV_WILLNEED))
    show("willneed negative len", lambda: fadvise(fd, base, -1, POSIX_FADV_WILLNEED))
    read("read 72 pages", fd, base, MIX_PAGES * PAGE)
    os.close(fd)


def willneed_wronly(base):
    """fadvise does not need FMODE_READ: a write-only descriptor reads pages in too."""
    wr = os.open(A, os.O_WRONLY)
    show("willneed wronly", lambda: fadvise(wr, base + PAGE, 2 * PAGE, POSIX_FADV_WILLNEED))
    fd = os.open(A, os.O_RDONLY)
    read("read 16k", fd, base, 16384)
    os.close(fd)
    os.close(wr)


def dontneed(base):
    """DONTNEED drops only the whole pages of the range (generic_fadvise() rounds in)."""
    fd = os.open(A, os.O_RDONLY)
    read("prime", fd, base, 32768)
    show("dontneed partial", lambda: fadvise(fd, base + 512, PAGE + 1024, POSIX_FADV_DONTNEED))
    read("after partial", fd, base, 32768)
    show("dontneed page 1", lambda: fadvise(fd, base + PAGE, PAGE, POSIX_FADV_DONTNEED))
    read("page 1", fd, base + PAGE, PAGE)
    show("dontneed 3..5 ragged", lambda: fadvise(fd, base + 3 * PAGE - 512, 3 * PAGE + 1024,
                                                 POSIX_FADV_DONTNEED))
    read("after ragged", fd, base, 32768)
    show("dontneed len 0", lambda: fadvise(fd, base + 6 * PAGE, 0, POSIX_FADV_DONTNEED))
    read("after len 0", fd, base, 32768)
    show("dontneed first page only", lambda: fadvise(fd, 0, 100, POSIX_FADV_DONTNEED))
    show("dontneed 0..8", lambda: fadvise(fd, base, 8 * PAGE, POSIX_FADV_DONTNEED))
    probe("probe", fd, base)
    os.close(fd)


def advice_keeps_cache(base):
    """NORMAL, RANDOM, SEQUENTIAL and NOREUSE change readahead state only."""
    fd = os.open(A, os.O_RDONLY)
    read("prime", fd, base, 16384)
    for name, advice in [("noreuse", POSIX_FADV_NOREUSE), ("random", POSIX_FADV_RANDOM),
                         ("sequential", POSIX_FADV_SEQUENTIAL), ("normal", POSIX_FADV_NORMAL)]:
        show(name, lambda: fadvise(fd, base, 16384, advice))
    probe("probe", fd, base, 4)
    show("bad advice", lambda: fadvise(fd, base, PAGE, 6))
    show("negative advice", lambda: fadvise(fd, base, PAGE, -1))
    os.close(fd)


def random_advice(base):
    """FMODE_RANDOM: page_cache_sync_ra() forces just the pages asked for."""
    fd = os.open(A, os.O_RDONLY)
    show("random", lambda: fadvise(fd, 0, 0, POSIX_FADV_RANDOM))
    for page in range(6):
        read(f"page {page}", fd, base + page * PAGE, PAGE)
    read("two pages", fd, base + 8 * PAGE, 2 * PAGE)
    show("normal", lambda: fadvise(fd, 0, 0, POSIX_FADV_NORMAL))
    for page in range(12, 18):
        read(f"page {page}", fd, base + page * PAGE, PAGE)
    read("pages 0..24", fd, base, 24 * PAGE)
    os.close(fd)


def sequential_advice(base):
    """SEQUENTIAL doubles the file's readahead window (ra_pages * 2); a page cached in the
    middle splits the windows where their requests show it."""
    for label, advice in [("default", None), ("sequential", POSIX_FADV_SEQUENTIAL)]:
        at = base if advice is None else base + 96 * PAGE
        fd = os.open(A, os.O_RDONLY)
        show(f"{label} willneed page 5", lambda: fadvise(fd, at + 5 * PAGE, PAGE,
                                                         POSIX_FADV_WILLNEED))
        if advice is not None:
            show(label, lambda: fadvise(fd, 0, 0, advice))
        read(f"{label} 256k", fd, at, 64 * PAGE)
        os.close(fd)


def normal_rereads_ra_pages(base):
    """file_ra_state_init() takes the disk's read-ahead at open; BLKRASET later changes
    bdi->ra_pages only, until FADV_NORMAL copies it into the file's state."""
    fd = os.open(A, os.O_RDONLY)
    show("BLKRASET 0", lambda: fcntl.ioctl(fd, BLKRASET, 0))
    read("page 0", fd, base, PAGE)
    read("page 1", fd, base + PAGE, PAGE)
    read("page 2..9", fd, base + 2 * PAGE, 8 * PAGE)
    show("normal", lambda: fadvise(fd, 0, 0, POSIX_FADV_NORMAL))
    read("page 20", fd, base + 20 * PAGE, PAGE)
    read("page 21", fd, base + 21 * PAGE, PAGE)
    read("page 22..29", fd, base + 22 * PAGE, 8 * PAGE)
    # force_page_cache_ra(): up to max(bdi->io_pages, ra_pages) pages, 8 here (COW unit)
    show("willneed 16 pages", lambda: fadvise(fd, base + 30 * PAGE, 16 * PAGE,
                                              POSIX_FADV_WILLNEED))
    probe("probe 30..46", fd, base + 30 * PAGE, 16)
    show("BLKRASET 256", lambda: fcntl.ioctl(fd, BLKRASET, 256))
    show("sequential", lambda: fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL))
    read("page 40..72", fd, base + 40 * PAGE, 32 * PAGE)
    os.close(fd)


# --- fallocate ---------------------------------------------------------------------------

def zero_range_partial(base):
    """block/fops.c blkdev_fallocate() -> truncate_bdev_range(): a partial page is zeroed in
    the cache and kept (mm/truncate.c truncate_inode_partial_folio()). Page 0 read first
    makes the 16 KiB read bring pages 1.. in as their own request; the control is a fresh
    16 KiB read of the same pages (one request from page 0)."""
    fd = os.open(A, os.O_RDWR)
    read("read page 0", fd, base, PAGE)
    read("read 16k", fd, base, 16384)
    show("zero range 1k", lambda: fallocate(fd, ZERO | KEEP, base, 1024))
    read("read again", fd, base, 16384)
    show("zero range 1k of page 2",
         lambda: fallocate(fd, ZERO | KEEP, base + 2 * PAGE + 1024, 1024))
    probe("probe", fd, base, 4)
    os.close(fd)
    fd = os.open(A, os.O_RDONLY)
    read("control", fd, base, 16384)
    os.close(fd)


def zero_range_spanning(base):
    fd = os.open(A, os.O_RDWR)
    read("prime", fd, base, 32768)
    show("zero 1.5..3.25", lambda: fallocate(fd, ZERO, base + PAGE + 512, 2 * PAGE - 512 + 1024))
    read("after", fd, base, 32768)
    show("zero 5..7 whole", lambda: fallocate(fd, ZERO | KEEP, base + 5 * PAGE, 2 * PAGE))
    read("after whole", fd, base, 32768)
    show("zero inside page 7", lambda: fallocate(fd, ZERO, base + 7 * PAGE + 1024, 2048))
    probe("probe", fd, base)
    os.close(fd)
    direct_read("device", A, base, 32768)


def punch_hole(base):
    fd = os.open(A, os.O_RDWR)
    read("prime", fd, base, 32768)
    show("punch 0.5..2", lambda: fallocate(fd, PUNCH | KEEP, base + 2048, 2 * PAGE - 2048))
    read("after", fd, base, 32768)
    show("punch no-hide-stale", lambda: fallocate(fd, PUNCH | KEEP | NO_HIDE, base + 4 * PAGE,
                                                  PAGE))
    probe("probe", fd, base)
    os.close(fd)
    direct_read("device", A, base, 32768)


def fallocate_modes(base):
    """Which modes a block device takes (vfs_fallocate() then blkdev_fallocate()), each over
    the same partial page, and the argument checks."""
    fd = os.open(A, os.O_RDWR)
    size = os.lseek(fd, 0, os.SEEK_END)
    read("prime", fd, base, 16384)
    results = []
    for mode in range(0x80):
        try:
            fallocate(fd, mode, base + 512, 1024)
            results.append(f"{mode:#x}=ok")
        except OSError as err:
            results.append(f"{mode:#x}={errno.errorcode[err.errno]}")
    print("modes:", " ".join(results), flush=True)
    probe("after modes", fd, base, 4)
    for label, mode, off, length in [
            ("len 0", ZERO, base, 0), ("negative offset", ZERO, -512, 1024),
            ("negative len", ZERO, base, -512), ("at end", ZERO, size, 512),
            ("at end keep", ZERO | KEEP, size, 512), ("mode 0 at end", 0, size, 512),
            ("collapse at end", COLLAPSE, size, 512), ("past end", ZERO, size - 512, 1024),
            ("past end keep", ZERO | KEEP, size - 512, 1024),
            ("punch past end", PUNCH | KEEP, size - 512, 1024),
            ("odd offset", ZERO, base + 100, 512), ("odd len", ZERO, base, 100),
            ("huge len", ZERO | KEEP, base, (1 << 63) - 1),
            ("overflow", ZERO | KEEP, 1 << 62, 1 << 62),
            ("collapse keep", COLLAPSE | KEEP, base, 512),
            ("insert keep", INSERT | KEEP, base, 512), ("unshare keep", UNSHARE | KEEP, base, 512),
            ("unshare zero", UNSHARE | ZERO, base, 512), ("punch zero", PUNCH | ZERO, base, 512)]:
        show(label, lambda: fallocate(fd, mode, off, length))
    probe("after checks", fd, base, 4)
    os.close(fd)
    ro = os.open(A, os.O_RDONLY)
    show("read-only descriptor", lambda: fallocate(ro, ZERO | KEEP, base, 512))
    show("read-only descriptor bad mode", lambda: fallocate(ro, 0x80, base, 512))
    os.close(ro)


def exclusive_holder(base):
    """truncate_bdev_range(): when another descriptor holds the disk exclusively (O_EXCL),
    bd_prepare_to_claim() fails and the pages touching the range are invalidated instead
    (invalidate_inode_pages2_range()), partial ones included; the exclusive holder itself
    truncates."""
    excl = os.open(A, os.O_RDWR | os.O_EXCL)
    fd = os.open(A, os.O_RDWR)
    read("prime", fd, base, 32768)
    show("zero 1k of page 1 (other holder)", lambda: fallocate(fd, ZERO | KEEP, base + PAGE, 1024))
    show("zero 1k of page 3 (holder)", lambda: fallocate(excl, ZERO | KEEP, base + 3 * PAGE, 1024))
    show("BLKZEROOUT page 5 part (other holder)",
         lambda: fcntl.ioctl(fd, BLKZEROOUT, rng(base + 5 * PAGE + 512, 512)))
    show("BLKDISCARD len 0 in page 6 (other holder)",
         lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 6 * PAGE + 512, 0)))
    show("BLKBSZSET (other holder)", lambda: fcntl.ioctl(fd, BLKBSZSET, struct.pack("i", 1024)))
    show("BLKBSZSET (holder)", lambda: fcntl.ioctl(excl, BLKBSZSET, struct.pack("i", 4096)))
    probe("probe", fd, base)
    os.close(excl)
    read("prime again", fd, base + 16 * PAGE, 32768)
    show("BLKDISCARD page 17 part (holder gone)",
         lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 17 * PAGE + 1024, 1024)))
    show("BLKDISCARD len 0 in page 18",
         lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 18 * PAGE + 512, 0)))
    probe("probe", fd, base + 16 * PAGE)
    os.close(fd)


# --- ioctls ------------------------------------------------------------------------------

def discard_zeroout(base):
    """block/ioctl.c blk_ioctl_discard() / blk_ioctl_zeroout(): truncate_bdev_range() first."""
    fd = os.open(A, os.O_RDWR)
    read("prime", fd, base, 32768)
    show("BLKDISCARD 1.5..2.5", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + PAGE + 2048, PAGE)))
    read("after discard", fd, base, 32768)
    show("BLKZEROOUT 4..5.5",
         lambda: fcntl.ioctl(fd, BLKZEROOUT, rng(base + 4 * PAGE, PAGE + 2048)))
    read("after zeroout", fd, base, 32768)
    show("BLKDISCARD odd", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 100, 512)))
    show("BLKDISCARD len 0", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 7 * PAGE, 0)))
    show("BLKZEROOUT len 0", lambda: fcntl.ioctl(fd, BLKZEROOUT, rng(base + 7 * PAGE, 0)))
    show("BLKSECDISCARD", lambda: fcntl.ioctl(fd, BLKSECDISCARD, rng(base + 7 * PAGE, 512)))
    show("BLKDISCARD past end", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base, 1 << 40)))
    show("BLKZEROOUT past end", lambda: fcntl.ioctl(fd, BLKZEROOUT, rng(base, 1 << 40)))
    show("BLKDISCARD wrap", lambda: fcntl.ioctl(fd, BLKDISCARD, rng((1 << 64) - 512, 1024)))
    show("BLKZEROOUT wrap", lambda: fcntl.ioctl(fd, BLKZEROOUT, rng((1 << 64) - 512, 1024)))
    show("BLKDISCARD bad pointer", lambda: fcntl.ioctl(fd, BLKDISCARD, 8))
    probe("probe", fd, base)
    os.close(fd)
    ro = os.open(A, os.O_RDONLY)
    show("BLKDISCARD read-only descriptor", lambda: fcntl.ioctl(ro, BLKDISCARD, rng(base, 512)))
    show("BLKZEROOUT read-only descriptor", lambda: fcntl.ioctl(ro, BLKZEROOUT, rng(base, 512)))
    os.close(ro)
    direct_read("device", A, base, 32768)


def read_only_disk(base):
    """BLKROSET: the range is truncated, then blkdev_issue_*() refuses with EPERM."""
    fd = os.open(A, os.O_RDWR)
    read("prime", fd, base, 32768)
    show("BLKROSET 1", lambda: fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1)))
    show("zero range", lambda: fallocate(fd, ZERO | KEEP, base + 512, 512))
    show("BLKDISCARD", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 2 * PAGE, PAGE)))
    show("BLKZEROOUT", lambda: fcntl.ioctl(fd, BLKZEROOUT, rng(base + 4 * PAGE + 512, 512)))
    show("punch", lambda: fallocate(fd, PUNCH | KEEP, base + 6 * PAGE + 1024, 512))
    show("BLKDISCARD len 0", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base, 0)))
    show("write 0 bytes", lambda: os.pwrite(fd, b"", base))
    show("write", lambda: os.pwrite(fd, b"x", base))
    show("BLKROSET 0", lambda: fcntl.ioctl(fd, BLKROSET, struct.pack("i", 0)))
    probe("probe", fd, base)
    os.close(fd)
    direct_read("device", A, base, 32768)


def flsbuf_per_unit(base):
    """BLKFLSBUF: fsync_bdev() + invalidate_bdev() of that disk only; another disk's pages,
    and a disk's pages after calls on another disk, stay."""
    fa, fb = os.open(A, os.O_RDWR), os.open(B, os.O_RDWR)
    read("a prime", fa, base, 16384)
    read("b prime", fb, base, 16384)
    show("a BLKFLSBUF", lambda: fcntl.ioctl(fa, BLKFLSBUF, 0))
    probe("a after", fa, base, 4)
    probe("b after", fb, base, 4)
    read("b prime 8..12", fb, base + 8 * PAGE, 16384)
    show("a willneed", lambda: fadvise(fa, base + 8 * PAGE, PAGE, POSIX_FADV_WILLNEED))
    show("a dontneed", lambda: fadvise(fa, base, PAGE, POSIX_FADV_DONTNEED))
    show("a zero range", lambda: fallocate(fa, ZERO | KEEP, base + 8 * PAGE, PAGE))
    show("a BLKDISCARD", lambda: fcntl.ioctl(fa, BLKDISCARD, rng(base + 9 * PAGE, PAGE)))
    show("a BLKZEROOUT", lambda: fcntl.ioctl(fa, BLKZEROOUT, rng(base + 10 * PAGE, PAGE)))
    show("a BLKBSZSET 512", lambda: fcntl.ioctl(fa, BLKBSZSET, struct.pack("i", 512)))
    show("a BLKBSZSET 4096", lambda: fcntl.ioctl(fa, BLKBSZSET, struct.pack("i", 4096)))
    show("a readahead", lambda: readahead(fa, base + 12 * PAGE, PAGE))
    dio = os.open(A, os.O_RDWR | os.O_DIRECT)
    show("a direct write", lambda: direct_write(dio, base + 13 * PAGE, b"d" * 512))
    os.close(dio)
    probe("b kept", fb, base + 8 * PAGE, 4)
    read("b prime 16..20", fb, base + 16 * PAGE, 16384)
    show("b BLKFLSBUF", lambda: fcntl.ioctl(fb, BLKFLSBUF, 0))
    probe("b dropped", fb, base + 16 * PAGE, 4)
    os.close(fa)
    os.close(fb)


def bszset(base):
    """set_blocksize(): kill_bdev() only when the size changes."""
    fd = os.open(A, os.O_RDWR)
    show("BLKBSZGET", lambda: struct.unpack("i", fcntl.ioctl(fd, BLKBSZGET, bytes(4)))[0])
    read("prime", fd, base, 16384)
    show("BLKBSZSET same", lambda: fcntl.ioctl(fd, BLKBSZSET, struct.pack("i", 4096)))
    probe("after same", fd, base, 4)
    read("prime 2..6", fd, base + 2 * PAGE, 16384)
    show("BLKBSZSET 2048", lambda: fcntl.ioctl(fd, BLKBSZSET, struct.pack("i", 2048)))
    probe("after 2048", fd, base + 2 * PAGE, 4)
    read("prime 8..12", fd, base + 8 * PAGE, 16384)
    show("BLKBSZSET bad", lambda: fcntl.ioctl(fd, BLKBSZSET, struct.pack("i", 3000)))
    show("BLKBSZSET NULL", lambda: fcntl.ioctl(fd, BLKBSZSET, 0))
    probe("after bad", fd, base + 8 * PAGE, 4)
    read("prime 14..18", fd, base + 14 * PAGE, 16384)
    show("BLKBSZSET 4096", lambda: fcntl.ioctl(fd, BLKBSZSET, struct.pack("i", 4096)))
    probe("after 4096", fd, base + 14 * PAGE, 4)
    os.close(fd)


# --- O_DIRECT and readahead(2) -----------------------------------------------------------

def direct_io(base):
    """O_DIRECT read: dirty pages written back, the cache kept (blkdev_read_iter()); O_DIRECT
    write: the pages it touches invalidated (blkdev_direct_write() kiocb_invalidate_pages(),
    before the alignment check, so a refused write drops them too)."""
    fd = os.open(A, os.O_RDWR)
    dio = os.open(A, os.O_RDWR | os.O_DIRECT)
    read("prime", fd, base, 32768)
    buf = mmap.mmap(-1, 3 * PAGE)
    show("direct read 1..3", lambda: os.preadv(dio, [buf], base + PAGE))
    show("direct read odd", lambda: os.preadv(dio, [memoryview(buf)[:1000]], base + PAGE))
    probe("after direct read", fd, base, 4)
    read("prime 8..16", fd, base + 8 * PAGE, 32768)
    show("direct write 512 in page 2",
         lambda: direct_write(dio, base + 10 * PAGE + 1024, b"W" * 512))
    show("direct write odd offset in page 4",
         lambda: direct_write(dio, base + 12 * PAGE + 100, b"V" * 512))
    show("direct write odd buffer in page 5",
         lambda: direct_write(dio, base + 13 * PAGE, b"U" * 512, skew=8))
    show("direct write odd length over 6..7",
         lambda: direct_write(dio, base + 14 * PAGE + 3584, b"T" * 1000))
    show("direct write past end",
         lambda: direct_write(dio, os.lseek(fd, 0, os.SEEK_END), b"S" * 512))
    probe("after direct writes", fd, base + 8 * PAGE)
    show("buffered write in page 9", lambda: os.pwrite(fd, b"B" * 100, base + 9 * PAGE + 50))
    read("after buffered write", fd, base + 8 * PAGE, 32768)
    direct_read("direct read of it", A, base + 9 * PAGE, PAGE)
    probe("still cached", fd, base + 8 * PAGE)
    os.close(dio)
    os.close(fd)
    direct_read("device", A, base, 65536)


def readahead_call(base):
    """mm/readahead.c ksys_readahead(): WILLNEED on a block device (6.1.176 allows S_ISBLK)."""
    fd = os.open(A, os.O_RDONLY)
    show("readahead page 0", lambda: readahead(fd, base, PAGE))
    read("read 16k", fd, base, 16384)
    show("readahead 20..22", lambda: readahead(fd, base + 20 * PAGE + 100, 2 * PAGE))
    show("readahead 0 bytes", lambda: readahead(fd, base + 30 * PAGE, 0))
    show("readahead huge count", lambda: readahead(fd, base + 40 * PAGE, (1 << 64) - PAGE))
    probe("probe 20..28", fd, base + 20 * PAGE)
    os.close(fd)
    wr = os.open(A, os.O_WRONLY)
    show("readahead write-only", lambda: readahead(wr, base, PAGE))
    os.close(wr)


def no_trim_unit(base):
    """Flag t: no discard and no write-zeroes limits. BLKDISCARD refuses before touching the
    cache; fallocate truncates, then PUNCH_HOLE (no fallback) fails and ZERO_RANGE writes
    zero pages."""
    fd = os.open(C, os.O_RDWR)
    read("prime", fd, base, 32768)
    show("BLKDISCARD", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + PAGE + 512, 512)))
    show("BLKDISCARD bad range", lambda: fcntl.ioctl(fd, BLKDISCARD, rng(base + 100, 512)))
    show("punch", lambda: fallocate(fd, PUNCH | KEEP, base + 2 * PAGE + 512, 512))
    show("zero range", lambda: fallocate(fd, ZERO | KEEP, base + 3 * PAGE + 512, PAGE))
    show("BLKZEROOUT", lambda: fcntl.ioctl(fd, BLKZEROOUT, rng(base + 6 * PAGE, 512)))
    show("BLKROSET 1", lambda: fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1)))
    show("read-only punch", lambda: fallocate(fd, PUNCH | KEEP, base + 7 * PAGE + 512, 512))
    show("read-only zero range", lambda: fallocate(fd, ZERO | KEEP, base + 7 * PAGE + 1024, 512))
    show("BLKROSET 0", lambda: fcntl.ioctl(fd, BLKROSET, struct.pack("i", 0)))
    probe("probe", fd, base)
    os.close(fd)
    direct_read("device", C, base, 32768)


SCENARIOS = [
    (A, willneed_page0), (A, willneed_ranges), (A, willneed_wronly), (A, dontneed),
    (A, advice_keeps_cache), (A, random_advice), (A, sequential_advice),
    (A, normal_rereads_ra_pages), (A, zero_range_partial), (A, zero_range_spanning),
    (A, punch_hole), (A, fallocate_modes), (A, exclusive_holder), (A, discard_zeroout),
    (A, read_only_disk), (A, bszset), (A, direct_io), (A, readahead_call),
    (C, no_trim_unit), (A, flsbuf_per_unit),
]
NAMES = [fn.__name__ for _, fn in SCENARIOS]


def main(wanted):
    for index, (path, fn) in enumerate(SCENARIOS):
        if wanted and fn.__name__ not in wanted:
            continue
        base = (index + 1) * REGION
        mix(path, base)
        if fn is flsbuf_per_unit:
            mix(B, base)
        print(f"== {fn.__name__}", flush=True)
        fn(base)
    print("== end", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
