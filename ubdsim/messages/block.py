"""printk texts of the block layer and buffer heads above the driver: a failed request and
the buffers it carried.

From: block/blk-mq.c blk_print_req_error(), fs/buffer.c buffer_io_error() and
lib/ratelimit.c ___ratelimit() [6.1]; checked against linux.uml's log with the COW file on a
full tmpfs (tests/harness/test_writeback.py). The 2.4 buffer cache's texts are not in the
spec, so only the 6.1 family has them (a 2.4 write-back failure is reported by errno alone).
"""
from __future__ import annotations

from . import MessageText

MESSAGES: dict[str, MessageText] = {
    # blk_update_request() -> blk_print_req_error(): blk_status_to_str() names the status
    # ("I/O", "critical space allocation", "operation not supported").
    "block.req_error": MessageText(
        "block/blk-mq.c blk_print_req_error()",
        {"6.1": "%s error, dev %s, sector %llu op 0x%x:(%s) flags 0x%x phys_seg %u prio class %u"}),
    # end_buffer_async_write(): one line per buffer of a failed write-back.
    "block.buffer_io_error": MessageText(
        "fs/buffer.c buffer_io_error()",
        {"6.1": "Buffer I/O error on dev %s, logical block %llu%s"}),
    # ___ratelimit(): when a new interval starts after suppressed calls.
    "block.suppressed": MessageText(
        "lib/ratelimit.c ___ratelimit()", {"6.1": "%s: %d callbacks suppressed"}),
}
