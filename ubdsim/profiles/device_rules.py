"""How each kernel opens and serves a unit (owned by the device work, issue 4).

From: `arch/um/drivers/ubd_kern.c` open_ubd_file(), path_requires_switch(), ubd_file_size(),
ubd_add(), cowify_bitmap(), ubd_submit_request(), io_thread(), do_io() [6.1]; 2.4.20-4um
ubd_kern.c (as the spec describes it) for the 2.4 rows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DeviceRules:
    resize_patch: bool           # [resize]: third field grows the device (2.4 + patch only)
    takes_locks: bool            # 6.1: fcntl(F_SETLK) on every file opened
    # ubd_add(): 6.1 ROUND_BLOCK() rounds the backing size up to 512; 2.4 keeps whole KiB.
    size_granule: int
    size_rounds_up: bool
    # cowify_bitmap(): sizeof(unsigned long) of the kernel's build (i386: 4, x86_64: 8).
    bitmap_word: int
    # 6.1 steps back one word when the first word is the bitmap's last (Lynn Kerby's fix).
    bitmap_end_guard: bool
    # Bytes per request segment (a bio_vec: one page); each segment writes its own bitmap words.
    segment_bytes: int
    # path_requires_switch(): 6.1 switches when the header's path cannot be stat'ed;
    # 2.4 treats a failed stat of either path as "same file".
    switch_if_header_unstatable: bool
    # 6.1 prints "Creating ..." after create_cow_file() succeeded; 2.4 announces it first.
    announce_creation_first: bool
    # init_cow_file(): 6.1 writes one zero byte at the end; 2.4 extends the file as a hole.
    creation_trailing_byte: bool
    supports_discard: bool       # REQ_OP_DISCARD / WRITE_ZEROES exist (6.1, unless flag t)
    # What a guest flush (REQ_OP_FLUSH: a guest fsync/fdatasync of the device, an O_SYNC or
    # O_DSYNC write, a mounted filesystem's commit) makes the host do, or None: no host call.
    # ubd_open(): 6.1 prints "ubdX: Can't open ..." after a failed open; 2.4 does not.
    reports_cant_open: bool
    # [resize]: accept a COW whose header size exceeds the backing size when the tail is marked.
    accepts_grown_cow: bool
    # ubd_open_dev() [6.1]: blk_queue_max_hw_sectors(8 * sizeof(long)) for a COW unit: requests
    # of at most this many sectors (None: no driver limit worth modelling).
    cow_request_sectors: int | None
    # do_io() [6.1]: after each segment `req->offset += len` adds the LAST run's length, not
    # the segment's: a read request whose segment mixes set and clear bits reads every later
    # segment of the request from a shifted offset (measured with linux.uml).
    read_offset_drift: bool
    # do_io() [6.1]: after a partial pread the loop reads again at the SAME offset into the
    # advanced buffer, so a sector cut by EOF repeats its tail bytes instead of zero-filling.
    short_read_rereads: bool
    # ubd_add(): [2.4.20] opens the device (ubd_open_dev) before sizing it and drops a unit
    # whose open fails; [6.1] only sizes it (ubd_file_size), registers the disk, and the
    # partition scan's open (ubd_open) may then fail with the disk staying registered.
    add_opens_device: bool
    # ubd_open_dev() [6.1]: vmalloc(bitmap_len) of a 0-byte bitmap (an empty backing file)
    # returns NULL: `Failed to vmalloc COW bitmap`, ENOMEM (measured with linux.uml).
    empty_bitmap_fails: bool
    # ubd_open(): opening a read-only unit for writing fails with EROFS ([2.4.20] has the
    # test; [6.1] has it commented out: the open succeeds and writes get EPERM).
    write_open_of_readonly_fails: bool
    # Largest soft block (page-cache buffer) size: buffered writes reach the driver in whole
    # blocks of this size when the device size allows ([6.1] block/bdev.c
    # set_init_blocksize(): a page, 4096; [2.4] BLOCK_SIZE, 1024).
    soft_block_max: int
    # The gendisk's name for unit N: [6.1] ubd_disk_register() "ubd%c" ('a' + unit) ->
    # "letter"; [2.4] the nodes /dev/ubd0..ubd7 -> "digit".
    disk_name_style: str
    # vprintk_store() [6.1]: a message is cut at LOG_LINE_MAX (992 bytes with its NUL and
    # its 2-byte KERN_<LEVEL> prefix): 989 visible characters (991 for a message printed
    # without a level). Only a path can be that long (a garbage COW header's backing path:
    # measured with linux.uml). None: not modelled ([2.4]: the spec says nothing).
    printk_text_max: int | None

    def disk_name(self, unit: int) -> str:
        return DISK_NAME_STYLES[self.disk_name_style](unit)


# Every spelling of a disk name; the harness and `ubdsim serve` accept all of them under
# every profile (issue 5), each profile names its disks with its own.
DISK_NAME_STYLES: dict[str, Callable[[int], str]] = {
    "letter": lambda unit: "ubd" + chr(ord("a") + unit),
    "digit": lambda unit: f"ubd{unit}",
}


DEVICE_2_4_RESIZE = DeviceRules(
    resize_patch=True, takes_locks=False, size_granule=1024, size_rounds_up=False,
    bitmap_word=4, bitmap_end_guard=False, segment_bytes=4096, switch_if_header_unstatable=False,
    announce_creation_first=True, creation_trailing_byte=False, supports_discard=False,
    reports_cant_open=False, accepts_grown_cow=True,
    cow_request_sectors=None, read_offset_drift=False, short_read_rereads=False,
    add_opens_device=True, empty_bitmap_fails=False, write_open_of_readonly_fails=True,
    soft_block_max=1024, disk_name_style="digit", printk_text_max=None)
# 2.4.20-4um as shipped: the same driver without the COW-resize patch.
DEVICE_2_4_STOCK = replace(DEVICE_2_4_RESIZE, resize_patch=False, accepts_grown_cow=False)
DEVICE_6_1 = DeviceRules(
    resize_patch=False, takes_locks=True, size_granule=512, size_rounds_up=True,
    bitmap_word=8, bitmap_end_guard=True, segment_bytes=4096, switch_if_header_unstatable=True,
    announce_creation_first=False, creation_trailing_byte=True, supports_discard=True,
    reports_cant_open=True, accepts_grown_cow=False,
    cow_request_sectors=64, read_offset_drift=True, short_read_rereads=True,
    add_opens_device=False, empty_bitmap_fails=True, write_open_of_readonly_fails=False,
    soft_block_max=4096, disk_name_style="letter", printk_text_max=989)
