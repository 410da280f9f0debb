"""Export the configured ubd units over NBD, so real kernels and qemu tools can use them.

  ubdsim serve [--kernel P] [--unix PATH | --port N] [--flush kernel|fsync]
               [--max-connections N] [--no-block-status] [--chain] WORD...

WORDs are kernel command-line options (`ubd0=cow,backing ubd1r=disk.img ...`), parsed and
booted exactly as the chosen kernel boots them: the kernel's messages are printed on stderr.
The server then opens each disk once, as a guest holding /dev/ubdX open would, and keeps it
open until it stops (clients come and go without reopening anything); units that fail to
open are left out. Each unit that opened becomes one NBD export named as the kernel names the
disk: ubda, ubdb... under 6.1, ubd0, ubd1... under 2.4. The first unit is also the default
export (empty name).

--chain is ubdsim's own option, not the kernel's (see `ubdsim run --help`): a backing file
that is itself a COW file is read as a read-only COW layer over its own backing file,
recursively, instead of raw as UML reads it. base:allocation then reports the top COW
file's sectors as data and everything the layers below hold as holes.

Clients: qemu (`-blockdev driver=nbd,...`), qemu-io, qemu-img, `ubdsim vm`. For example:
  ubdsim serve --kernel 6.1 --unix /tmp/u.sock ubd0=disk.cow,disk.img &
  qemu-io -f raw -c 'write -P 0xab 0 64k' 'nbd+unix:///ubda?socket=/tmp/u.sock'
  qemu-img map --output=json -f raw 'nbd+unix:///ubda?socket=/tmp/u.sock'

`qemu-img map` (NBD_CMD_BLOCK_STATUS, context base:allocation) reports the sectors that live
in the COW file as data and the sectors still read from the backing file as holes.
Read-only units (flag r, or a file only readable) refuse writes with EPERM.

--no-block-status offers no base:allocation context, so clients treat every sector as data.
Use it for `qemu-img compare`: qemu reads an NBD hole that is not flagged zero as an
unallocated, all-zero region (qemu-img.c img_compare()), while here a hole means "read from
the backing file", which usually holds data. (`qemu-img convert` and guests read holes.)

--flush kernel (default) does what the real driver does with a guest's flush: nothing on the
host, under 6.1 as under 2.4 (6.1's ubd_submit_request() gives the flush no I/O descriptor,
so the I/O thread never runs do_io()'s fdatasync; 2.4 has no flush request; measured with
linux.uml: no fsync, fdatasync or sync of any host file). Nothing the guest wrote is made
durable by a flush: a host crash can lose acknowledged, flushed writes, exactly as with UML.
Only flag s (or ubd=sync) makes writes durable, each one: the files are opened O_SYNC.
--flush fsync is ubdsim's own choice, not the kernel's: each flush fsyncs the file the guest
writes (the COW file, data and bitmap, or the raw file) before it is acknowledged, so
flushed data survives a host crash. The backing file is never written and never synced.

Listening is on a unix socket (default ./ubdsim-nbd.sock) or on 127.0.0.1:N only (N from 0
to 65535; 0 picks a free port): the NBD protocol has no authentication. When ready, one line
`ubdsim serve: listening on ...` goes to stderr. SIGTERM or Ctrl-C stops the server and
closes the units (exit 0 / 130).

--max-connections N (default 16, at least 1) serves at most N clients at once, as qemu-nbd's
--shared=N does. A client over the limit is refused the NBD way: it gets the greeting, then
every option it sends is answered NBD_REP_ERR_POLICY with the message "too many clients..."
(qemu and libnbd print it), and it is disconnected; the server logs one line. The slot of a
client that disconnects is free at once. Large requests are streamed: a read reply goes out
in pieces of at most 1 MiB (several NBD_REPLY_TYPE_OFFSET_DATA chunks with structured
replies), each sent before the next is read, and a write payload is written 256 KiB at a
time as it arrives (1 MiB while --record, --trace or --inject watch each request), so the
client sends the next piece while the host writes one; a client that stops reading (or
sending) holds about 1 MiB of the server's memory, not its whole request (up to 32 MiB,
the advertised maximum block size).
A zero-length read gets an empty successful reply (NBD_REPLY_TYPE_NONE with structured
replies), as from qemu-nbd.

A host read or write that fails (a full host disk, an --inject fault) is answered with the
NBD error (ENOSPC for a full disk, else EIO mostly) and the server goes on; one line on
stderr says so the first time each kind of failure happens. --inject SPEC (see `ubdsim run
--help`) makes chosen host calls fail; after --inject ...:crash the server stops at once with
exit status 137, as a SIGKILL would stop it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from ..explain.options import add_hint_options
from ..errors import UsageError
from ..lab.frontend import add_record_options, check_inject
from ..nbd.exports import FLUSH_MODES, open_exports
from ..nbd.server import NbdServer
from ..profiles import DEFAULT_PROFILE, PROFILES, get_profile
from .argtypes import int_range, port
from .status import ERROR, INTERRUPTED, OK, USAGE

DEFAULT_SOCKET = "ubdsim-nbd.sock"
DEFAULT_MAX_CONNECTIONS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", default=DEFAULT_PROFILE, choices=list(PROFILES),
                        help=f"kernel profile to behave as (default {DEFAULT_PROFILE})")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="PATH", help=f"unix socket to listen on (default ./{DEFAULT_SOCKET})")
    where.add_argument("--port", type=port, metavar="N",
                       help="listen on 127.0.0.1:N instead (0..65535; 0 picks a free port)")
    parser.add_argument("--max-connections", type=int_range(1), metavar="N",
                        default=DEFAULT_MAX_CONNECTIONS,
                        help="serve at most N clients at once, refuse the next ones "
                             f"(default {DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--flush", choices=FLUSH_MODES, default="kernel",
                        help="what a client's flush does: what the real driver does, i.e. "
                             "nothing on the host (kernel, default), or ubdsim's own durable "
                             "fsync of the written file (fsync)")
    parser.add_argument("--no-block-status", action="store_true",
                        help="do not offer base:allocation (for qemu-img compare)")
    parser.add_argument("--chain", action="store_true",
                        help="ubdsim's own, not the kernel's (UML cannot stack): read a backing "
                             "file that is a COW file as a read-only layer over its own backing "
                             "file, recursively, each link's size and mtime checked; writes go "
                             "to the top COW file only (default: raw, as UML reads it; see "
                             "`ubdsim run --help`)")
    add_hint_options(parser)
    add_record_options(parser)
    parser.add_argument("words", nargs="+", metavar="WORD",
                        help="kernel command-line options such as ubd0=cow,backing")


def _print_kernel(line: str) -> None:
    """Kernel messages go to stderr, as `ubdsim run` prints them."""
    print(line, file=sys.stderr, flush=True)


async def _serve(server: NbdServer, args: argparse.Namespace, names: list[str]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    if args.port is not None:
        port = await server.start_tcp(args.port)
        where = f"127.0.0.1:{port}"
    else:
        path = args.unix or DEFAULT_SOCKET
        if os.path.exists(path):
            if not _stale_socket(path):
                print(f"ubdsim serve: error: {path} exists and is not a stale socket",
                      file=sys.stderr)
                return ERROR
            os.unlink(path)
        await server.start_unix(path)
        where = f"unix:{path}"
    print(f"ubdsim serve: listening on {where}, exports {' '.join(names)}", file=sys.stderr,
          flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
        if args.port is None:
            try:
                os.unlink(args.unix or DEFAULT_SOCKET)
            except FileNotFoundError:
                pass
    return INTERRUPTED if received and received[0] == signal.SIGINT else OK


def _stale_socket(path: str) -> bool:
    """A socket file nobody listens on any more (a killed server's leftover) may be replaced."""
    import socket
    import stat
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        return False
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def run(args: argparse.Namespace) -> int:
    profile = get_profile(args.kernel)
    try:
        check_inject(args)
    except UsageError as err:
        print(f"ubdsim serve: error: {err}", file=sys.stderr)
        return USAGE
    opened = open_exports(args.words, profile, args.flush, _print_kernel, chain=args.chain,
                          hints=not args.quiet_hints, record=args, tool="ubdsim serve")
    try:
        if not opened.exports:
            print("ubdsim serve: error: no unit opened, nothing to export", file=sys.stderr)
            return ERROR
        server = NbdServer(opened.exports, block_status=not args.no_block_status,
                           max_connections=args.max_connections)
        return asyncio.run(_serve(server, args, [e.name for e in opened.exports]))
    finally:
        opened.close()
