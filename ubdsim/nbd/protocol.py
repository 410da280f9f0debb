"""NBD wire constants (NBD project doc/proto.md): magics, options, replies, commands, flags.

All integers on the wire are big-endian. Only the fixed newstyle handshake exists here: the
oldstyle handshake cannot carry export names, and every current client (qemu 7.2, nbd-client,
libnbd) speaks fixed newstyle.
"""
from __future__ import annotations

import errno
import struct

# Handshake
NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OPT_REPLY_MAGIC = 0x3E889045565A9
FLAG_FIXED_NEWSTYLE = 1 << 0           # handshake flags (server) / client flags
FLAG_NO_ZEROES = 1 << 1

# Options
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# Option replies
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = (1 << 31) + 1
REP_ERR_POLICY = (1 << 31) + 2
REP_ERR_INVALID = (1 << 31) + 3
REP_ERR_UNKNOWN = (1 << 31) + 6

# NBD_REP_INFO types
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Transmission flags
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_CAN_MULTI_CONN = 1 << 8

# Requests and replies
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
REQUEST = struct.Struct(">IHHQQI")     # magic, flags, type, handle, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")     # magic, error, handle
STRUCTURED_REPLY = struct.Struct(">IHHQI")  # magic, flags, type, handle, length
OPTION_HEADER = struct.Struct(">QII")   # IHAVEOPT, option, length
OPTION_REPLY = struct.Struct(">QIII")   # magic, option, reply type, length

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_REQ_ONE = 1 << 3

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1

# base:allocation extent flags
STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1
BASE_ALLOCATION = "base:allocation"


def structured_chunk(flags: int, kind: int, handle: int, length: int) -> bytes:
    """The header of a structured reply chunk; `length` bytes of payload follow it
    (proto.md "Structured reply chunk message")."""
    return STRUCTURED_REPLY.pack(STRUCTURED_REPLY_MAGIC, flags, kind, handle, length)


def simple_reply(error: int, handle: int) -> bytes:
    """A simple reply; a successful READ's data follows it (proto.md "Simple reply message")."""
    return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)


# The NBD protocol's error values are Linux errnos, but only these may cross the wire;
# everything else becomes EIO (proto.md "Error values").
ERRNOS_ON_WIRE = frozenset({errno.EPERM, errno.EIO, errno.ENOMEM, errno.EINVAL, errno.ENOSPC,
                            errno.EOVERFLOW, errno.ENOTSUP, errno.ESHUTDOWN})


def wire_errno(value: int | None) -> int:
    """The NBD error for a host/ubd errno (EOPNOTSUPP is ENOTSUP on Linux)."""
    return value if value in ERRNOS_ON_WIRE else errno.EIO
