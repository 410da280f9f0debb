"""An NBD server (fixed newstyle) over the BlockDevice contract: asyncio for the handshake,
one thread per connection for the transmission phase.

Why this shape:
- One asyncio loop in one thread accepts clients and runs their handshakes (and refuses the
  ones over the limit). After NBD_OPT_GO (or EXPORT_NAME) the connection's requests are
  served by a thread of its own on a blocking socket (_hand_over(), _BlockingWire): a request
  header or a whole write piece arrives in one recv_into(MSG_WAITALL) into a buffer the
  connection allocated once, a reply goes out in one sendmsg of its parts, and the thread
  sleeps in the kernel in between, where a coroutine went back to the loop for every partial
  recv/send (measured: 1.4 ms per 1 MiB write and 1.1 ms per 1 MiB read in the server
  before, 1.0 and 0.4 ms after, of which the unit's own write is 0.7 ms).
- Every device call (pread/pwrite plus a COW bitmap update) holds one lock, the server's
  _device_lock, from its start to its end: device calls of several clients never interleave
  inside the device model, so the bitmap stays consistent, as it does under the real
  driver's single I/O thread (ubd_kern.c io_thread() [6.1]).
- Multi-connection (NBD_FLAG_CAN_MULTI_CONN) is advertised: all connections to an export
  drive the same unit through that lock, and a reply goes out after its device call
  returned, so what one connection had acknowledged is what any other reads, and a flush
  on any connection acts on the one unit all of them wrote (its flush mode says what it
  makes durable: nothing reaches the host under `kernel`, fsync(2) of the file under `fsync`).
  qemu 7.2's own client opens one connection (it has no multi-conn option); libnbd clients
  (nbdcopy) use several.
- A connection handles its requests in order and answers each one only after its device calls
  returned, so a client that disconnects mid-request loses nothing it saw acknowledged.
- READ and WRITE move their data in pieces of at most STREAM_CHUNK (1 MiB, cut from the
  request's first sector; see _pieces()): a read reply goes out piece by piece (several
  NBD_REPLY_TYPE_OFFSET_DATA chunks with structured replies), each piece sent before the next
  one is read; a write payload is received and written piece by piece. So a client that
  stops reading its reply (or stops sending its payload) pins at most one piece, not a
  32 MiB request. Pieces of other clients' requests may come in between, as the block layer
  splits a large bio before the real driver sees it (blk_queue_max_hw_sectors(), ubd_kern.c
  ubd_open_dev() [6.1]).
- At most `max_connections` clients are served at once; the next ones get the NBD greeting,
  then NBD_REP_ERR_POLICY with a message to each option, and are disconnected (see _refuse()).
- The device model only takes whole 512-byte sectors; requests that are not aligned (a client
  that did not ask for NBD_INFO_BLOCK_SIZE) are served by read-modify-write here, as the page
  cache does above the real driver.
- Structured replies are negotiated because `NBD_CMD_BLOCK_STATUS` needs them; `base:allocation`
  then tells a client which sectors live in the COW file (data) and which still come from the
  backing file (reported as holes that are not known to read as zeros).
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..device.api import SECTOR_SIZE, BlockDevice
from ..errors import DeviceIOError, UbdError
from . import protocol as p

MAX_OPTION_LENGTH = 64 * 1024
MAX_REQUEST_LENGTH = 32 * 1024 * 1024      # advertised as the maximum block size
PREFERRED_BLOCK = 4096
ZERO_CHUNK = 1024 * 1024
STREAM_CHUNK = 1024 * 1024                  # READ/WRITE data moved per device call (module doc)
WRITE_PIPELINE = 256 * 1024                 # an unwatched write's piece (NbdServer._write())
REFUSE_SECONDS = 10.0                       # how long a client over the limit is talked to
REFUSE_OPTIONS = 16                         # and how many of its options are answered
REFUSING_MAX = 64                           # over-limit clients talked to at once; more: closed
MAX_EXTENTS = 4096                          # descriptors per BLOCK_STATUS reply
SOCKET_BUFFER = 2 * STREAM_CHUNK            # SO_SNDBUF / SO_RCVBUF asked for (_socket_buffers())
# A structured OFFSET_DATA chunk's header and its offset, packed at once.
_DATA_CHUNK = struct.Struct(p.STRUCTURED_REPLY.format + "Q")

# (allocated, offset, length) runs covering a byte range, offsets and lengths in bytes.
AllocationMap = Callable[[int, int], Iterable[tuple[bool, int, int]]]


@dataclass
class Export:
    """One unit offered to NBD clients under `name` (the kernel's device name)."""

    name: str
    device: BlockDevice
    flush: Callable[[], None]
    allocation: AllocationMap | None = None   # None: every byte reported as data
    discard: bool = True                      # whether NBD_CMD_TRIM is advertised
    # The device's own write-zeroes (sector-aligned); None: zeros are written as data.
    zeroes: Callable[[int, int], None] | None = None
    description: str = ""
    aliases: tuple[str, ...] = ()             # other names accepted, not listed

    @property
    def size(self) -> int:
        # The block layer sees whole sectors only (set_capacity(size / 512)).
        return self.device.size - self.device.size % SECTOR_SIZE

    @property
    def transmission_flags(self) -> int:
        # CAN_MULTI_CONN: every connection to an export drives the same unit, one device call
        # at a time, and a reply goes out only after its device call returned, so a write
        # replied to on one connection is seen by a read on any other, and a flush on any
        # connection does the same for all of them (module doc).
        flags = p.TFLAG_HAS_FLAGS | p.TFLAG_SEND_FLUSH | p.TFLAG_CAN_MULTI_CONN
        if self.device.readonly:
            flags |= p.TFLAG_READ_ONLY
        else:
            flags |= p.TFLAG_SEND_WRITE_ZEROES | (p.TFLAG_SEND_TRIM if self.discard else 0)
        return flags


class ProtocolError(Exception):
    """The connection is dropped (a hard disconnect): the client broke the protocol (proto.md
    allows the drop), or a read error came after a simple reply's header had gone out saying
    success (proto.md requires the drop: "NBD_CMD_READ", simple replies)."""


class RequestError(Exception):
    """A request fails with an NBD errno; the connection goes on."""

    def __init__(self, error: int) -> None:
        super().__init__(errno.errorcode.get(error, str(error)))
        self.error = error


class HostFailures:
    """One stderr line the first time each export's host {read, write, ...} fails with an
    errno (a full host disk, an --inject fault): the client only gets an NBD error, and the
    guest of `ubdsim vm` only an EIO, so ubdsim says what happened on the host. Repeats of
    the same failure are counted, not printed (a full disk fails every later write)."""

    def __init__(self, log: Callable[[str], None], client: str | None = None) -> None:
        self.log = log
        self.client = client          # what the client sees, e.g. "guest got EIO"
        self.seen: dict[tuple[str, str, int], int] = {}

    def __call__(self, device: BlockDevice, op: str, err: Exception) -> None:
        from ..fileio import shown
        error = getattr(err, "errno", None) or errno.EIO
        injected = str(err).startswith("injected fault")     # lab/inject.py's DeviceIOError
        path = getattr(device, "path", "?")
        key = (path, op, error)
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] > 1:
            return
        sees = self.client or f"client got NBD error {errno.errorcode.get(p.wire_errno(error), error)}"
        where = "to" if op == "write" else "of"
        self.log(f"ubdsim: host {op} {where} {shown(path)} failed: {os.strerror(error)}"
                 f"{' (--inject)' if injected else ''} ({sees}; later failures like it are "
                 "not shown)")


def _device_errors(call: Callable[[], object],
                   report: Callable[[Exception], None] | None = None) -> object:
    """Run a device call; its error becomes the NBD error (the connection goes on). A host
    failure (DeviceIOError, OSError) is also given to `report` (HostFailures)."""
    try:
        return call()
    except DeviceIOError as err:
        if report is not None:
            report(err)
        raise RequestError(p.wire_errno(err.errno)) from err
    except UbdError as err:
        raise RequestError(p.wire_errno(err.errno)) from err
    except OSError as err:
        if report is not None:
            report(err)
        raise RequestError(p.wire_errno(err.errno)) from err


@dataclass
class _Session:
    """What one connection negotiated."""

    structured: bool = False
    meta_export: str | None = None   # export the base:allocation context was set for
    meta_ids: dict[int, str] = field(default_factory=dict)


META_CONTEXT_ID = 1   # our only context, base:allocation


class NbdServer:
    """Serves `exports` (by name; the first one is also the default export "")."""

    def __init__(self, exports: list[Export], log: Callable[[str], None] | None = None,
                 block_status: bool = True, max_connections: int | None = None,
                 client_error: str | None = None) -> None:
        """`client_error`: what a client sees of a failed host call, for the one line
        HostFailures prints (default: the NBD error sent)."""
        self.exports = {e.name: e for e in exports}
        self._by_name = {alias: e for e in exports for alias in e.aliases}
        self._by_name.update(self.exports)
        self.block_status = block_status      # offer the base:allocation context
        self.default = exports[0] if exports else None
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.host_failures = HostFailures(self.log, client_error)
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()
        self.max_connections = max_connections  # None: no limit (`ubdsim vm`'s private socket)
        self._serving = 0          # clients holding a slot; freed before their socket closes
        self._refusing = 0
        # Held around every device call: clients' device calls never interleave (module doc).
        self._device_lock = threading.Lock()

    # ---- listening ------------------------------------------------------------------------
    async def start_unix(self, path: str) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
        except OSError:
            listener.close()
            raise
        self._listen(listener)

    async def start_tcp(self, port: int) -> int:
        """Listen on loopback only: NBD has no authentication here. Returns the bound port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", port))
        except OSError:
            listener.close()
            raise
        self._listen(listener)
        return listener.getsockname()[1]

    def _listen(self, listener: socket.socket) -> None:
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self._accepting = asyncio.get_running_loop().create_task(self._accept(listener))

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as err:
                # EMFILE/ENFILE/ENOBUFS: out of descriptors or memory. The pending client stays
                # in the backlog; keep the listener alive instead of letting this task die.
                self.log(f"ubdsim serve: cannot accept a client: {err.strerror or err}")
                await asyncio.sleep(0.5)
                continue
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # qemu stalls 20-40 ms per request behind Nagle (guest-harness-notes.md).
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _socket_buffers(conn)
            self._start(loop, _Wire(conn))

    def _start(self, loop: asyncio.AbstractEventLoop, wire: "_Wire") -> None:
        """Serve a new client in its own task, or refuse it when every slot is taken."""
        if self.max_connections is None or self._serving < self.max_connections:
            self._serving += 1          # taken here, so the count never lags the accepts
            task = loop.create_task(self._client(wire))
        elif self._refusing < REFUSING_MAX:
            self._refusing += 1
            self.log(f"ubdsim serve: refusing a client: already serving {self._serving} "
                     f"(--max-connections {self.max_connections})")
            task = loop.create_task(self._refuse(wire))
        else:
            wire.close()                # a flood: not even a greeting
            return
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    # ---- one connection -------------------------------------------------------------------
    async def _client(self, wire: "_Wire") -> None:
        try:
            session = _Session()
            export = await self._negotiate(wire, session)
            if export is not None:
                await self._hand_over(wire, export, session)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass            # EOF is a disconnect: qemu never sends NBD_CMD_DISC on a hard exit
        except asyncio.CancelledError:
            pass            # stop()
        except ProtocolError as err:
            self.log(f"ubdsim serve: dropping a client: {err}")
        finally:
            # Free the slot before the client can see its EOF: a client that reconnects at
            # once after a disconnect must find the slot free.
            self._serving -= 1
            wire.close()

    # ---- clients over the limit -----------------------------------------------------------
    async def _refuse(self, wire: "_Wire") -> None:
        """A client over --max-connections, refused the NBD way rather than by a bare close.

        proto.md "Termination of the session during option haggling": a server that does not
        want a client MUST error its options until the client gets the hint (here with
        NBD_REP_ERR_POLICY and a message the client shows its user, e.g. qemu's "server
        reported: ..."), and MAY hard-disconnect a client whose behaviour is a denial of
        service. A bare close would leave the user with "unexpected end-of-file". The talk is
        bounded (REFUSE_SECONDS, REFUSE_OPTIONS; REFUSING_MAX such clients at once), so
        refused clients cannot pile up in place of served ones.
        """
        try:
            await asyncio.wait_for(self._refusal(wire), REFUSE_SECONDS)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                ProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._refusing -= 1
            wire.close()

    async def _refusal(self, wire: "_Wire") -> None:
        """The greeting, then NBD_REP_ERR_POLICY to every option; ABORT is acknowledged."""
        wire.write(_greeting())
        await wire.readexactly(4)                                   # client flags
        message = (f"too many clients: this server serves {self.max_connections} at once "
                   f"(ubdsim serve --max-connections)").encode()
        for _ in range(REFUSE_OPTIONS):
            option, _data = await _read_option(wire)
            if option == p.OPT_EXPORT_NAME:
                return          # it cannot be answered with an error: hard disconnect (proto.md)
            if option == p.OPT_ABORT:
                wire.write(_option_reply(option, p.REP_ACK))
                await wire.drain()
                return
            wire.write(_option_reply(option, p.REP_ERR_POLICY, message))

    async def _negotiate(self, wire: "_Wire",
                         session: _Session) -> Export | None:
        wire.write(_greeting())
        (client_flags,) = struct.unpack(">I", await wire.readexactly(4))
        if client_flags & ~(p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES):
            raise ProtocolError(f"unknown client flags {client_flags:#x}")
        no_zeroes = bool(client_flags & p.FLAG_NO_ZEROES)

        def reply(option: int, kind: int, data: bytes = b"") -> None:
            wire.write(_option_reply(option, kind, data))

        while True:
            option, data = await _read_option(wire)
            if option == p.OPT_EXPORT_NAME:
                export = self._lookup(data.decode(errors="replace"))
                if export is None:
                    raise ProtocolError(f"unknown export {data!r}")
                wire.write(struct.pack(">QH", export.size, export.transmission_flags)
                             + (b"" if no_zeroes else bytes(124)))
                return export
            if option == p.OPT_ABORT:
                reply(option, p.REP_ACK)
                await wire.drain()
                return None
            if option == p.OPT_LIST:
                if data:
                    reply(option, p.REP_ERR_INVALID)
                else:
                    for name in self.exports:
                        encoded = name.encode()
                        reply(option, p.REP_SERVER, struct.pack(">I", len(encoded)) + encoded)
                    reply(option, p.REP_ACK)
            elif option in (p.OPT_INFO, p.OPT_GO):
                export = self._info(option, data, reply, session)
                if export is not None and option == p.OPT_GO:
                    await wire.drain()
                    return export
            elif option == p.OPT_STRUCTURED_REPLY:
                if data:
                    reply(option, p.REP_ERR_INVALID)
                else:
                    session.structured = True
                    reply(option, p.REP_ACK)
            elif option in (p.OPT_LIST_META_CONTEXT, p.OPT_SET_META_CONTEXT):
                self._meta_context(option, data, reply, session)
            elif option == p.OPT_STARTTLS:
                reply(option, p.REP_ERR_POLICY)
            else:
                reply(option, p.REP_ERR_UNSUP)
            await wire.drain()

    def _lookup(self, name: str) -> Export | None:
        return self.default if name == "" else self._by_name.get(name)

    def _info(self, option: int, data: bytes, reply: Callable[..., None],
              session: _Session) -> Export | None:
        """NBD_OPT_INFO / NBD_OPT_GO: describe the export; GO also selects it."""
        try:
            (name_len,) = struct.unpack_from(">I", data)
            name = data[4:4 + name_len].decode(errors="replace")
            (count,) = struct.unpack_from(">H", data, 4 + name_len)
            requests = struct.unpack_from(f">{count}H", data, 6 + name_len)
            if len(data) != 6 + name_len + 2 * count:
                raise struct.error
        except struct.error:
            reply(option, p.REP_ERR_INVALID)
            return None
        export = self._lookup(name)
        if export is None:
            reply(option, p.REP_ERR_UNKNOWN, f"no export named {name!r}".encode())
            return None
        reply(option, p.REP_INFO, struct.pack(">HQH", p.INFO_EXPORT, export.size,
                                               export.transmission_flags))
        if p.INFO_NAME in requests:
            reply(option, p.REP_INFO, struct.pack(">H", p.INFO_NAME) + export.name.encode())
        if p.INFO_DESCRIPTION in requests and export.description:
            reply(option, p.REP_INFO,
                  struct.pack(">H", p.INFO_DESCRIPTION) + export.description.encode())
        if p.INFO_BLOCK_SIZE in requests:
            reply(option, p.REP_INFO, struct.pack(">HIII", p.INFO_BLOCK_SIZE, SECTOR_SIZE,
                                                   PREFERRED_BLOCK, MAX_REQUEST_LENGTH))
        if option == p.OPT_GO and session.meta_export not in (None, export.name, name):
            session.meta_ids.clear()        # contexts were set for another export
        reply(option, p.REP_ACK)
        return export

    def _meta_context(self, option: int, data: bytes, reply: Callable[..., None],
                      session: _Session) -> None:
        """LIST/SET_META_CONTEXT: the only context offered is base:allocation."""
        if not session.structured:
            reply(option, p.REP_ERR_INVALID, b"structured replies not negotiated")
            return
        try:
            (name_len,) = struct.unpack_from(">I", data)
            name = data[4:4 + name_len].decode(errors="replace")
            (count,) = struct.unpack_from(">I", data, 4 + name_len)
            position, queries = 8 + name_len, []
            for _ in range(count):
                (qlen,) = struct.unpack_from(">I", data, position)
                queries.append(data[position + 4:position + 4 + qlen].decode(errors="replace"))
                position += 4 + qlen
            if position != len(data):
                raise struct.error
        except struct.error:
            reply(option, p.REP_ERR_INVALID)
            return
        export = self._lookup(name)
        if export is None:
            reply(option, p.REP_ERR_UNKNOWN)
            return
        if option == p.OPT_LIST_META_CONTEXT:
            matched = not queries or any(q in ("base:", p.BASE_ALLOCATION) for q in queries)
        else:
            matched = p.BASE_ALLOCATION in queries
        matched = matched and self.block_status
        if option == p.OPT_SET_META_CONTEXT:
            session.meta_ids.clear()
            session.meta_export = export.name
            if matched:
                session.meta_ids[META_CONTEXT_ID] = p.BASE_ALLOCATION
        if matched:
            reply(option, p.REP_META_CONTEXT,
                  struct.pack(">I", META_CONTEXT_ID) + p.BASE_ALLOCATION.encode())
        reply(option, p.REP_ACK)

    # ---- transmission ---------------------------------------------------------------------
    async def _hand_over(self, wire: "_Wire", export: Export, session: _Session) -> None:
        """Run the transmission phase in a thread of its own (module doc) and wait for it.

        stop() cancels this wait: the socket is then shut down, which ends the thread's
        blocking recv/send at once, and the socket is closed only after the thread is gone
        (never while the thread may still use its descriptor)."""
        await wire.drain()                  # NBD_OPT_EXPORT_NAME's reply may still be pending
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def finished(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def run() -> None:
            error: BaseException | None = None
            try:
                self._transmit(_BlockingWire(wire.sock), export, session)
            except BaseException as err:        # handed to the waiting task
                error = err
            try:
                loop.call_soon_threadsafe(finished, error)
            except RuntimeError:
                pass                            # the loop is gone: nobody waits any more

        thread = threading.Thread(target=run, name="ubdsim-nbd-client", daemon=True)
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            try:
                wire.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            while not done.done():
                try:
                    await asyncio.shield(done)
                except asyncio.CancelledError:
                    continue
                except BaseException:
                    break
            if done.done() and not done.cancelled():
                done.exception()                # retrieved: the disconnect is ours
            raise

    def _transmit(self, wire: "_BlockingWire", export: Export, session: _Session) -> None:
        header, unpack = wire.header, p.REQUEST.unpack_from
        while True:
            wire.read_into(header)
            magic, flags, kind, handle, offset, length = unpack(header)
            if magic != p.REQUEST_MAGIC:
                raise ProtocolError("bad request magic")
            if length > MAX_REQUEST_LENGTH and kind in (p.CMD_READ, p.CMD_WRITE):
                raise ProtocolError(f"request of {length} bytes")
            if kind == p.CMD_WRITE:
                self._write(wire, export, session, handle, offset, length)
            elif kind == p.CMD_READ:
                self._read(wire, export, session, handle, offset, length)
            elif kind == p.CMD_DISC:
                wire.drain()
                return
            else:
                self._other(wire, export, session, kind, flags, handle, offset, length)
            wire.drain()

    def _device(self, call: Callable[[], object], device: BlockDevice, op: str) -> object:
        """One device call, under the lock that keeps device calls of all clients apart."""
        with self._device_lock:
            return _device_errors(call, lambda e: self.host_failures(device, op, e))

    def _read(self, wire: "_BlockingWire", export: Export, session: _Session, handle: int,
              offset: int, length: int) -> None:
        """NBD_CMD_READ, streamed: each STREAM_CHUNK piece is read, then sent."""
        try:
            _check_request(export, p.CMD_READ, offset, length)
        except RequestError as err:
            self._send_error(wire, session, handle, err.error)
            return
        if length == 0:
            # proto.md "NBD_CMD_READ": a zero-length read is unspecified, but the server SHOULD
            # NOT disconnect. A content chunk MUST describe at least one byte (OFFSET_DATA
            # length >= 9), and zero chunks cover the zero bytes asked for, so a structured
            # reply is one NBD_REPLY_TYPE_NONE chunk with NBD_REPLY_FLAG_DONE (what qemu-nbd
            # 7.2 sends); a simple reply is its header with no data.
            wire.write(p.structured_chunk(p.REPLY_FLAG_DONE, p.REPLY_TYPE_NONE, handle, 0)
                       if session.structured else p.simple_reply(0, handle))
            return
        if session.structured:
            self._read_structured(wire, session, export.device, handle, offset, length)
        else:
            self._read_simple(wire, export.device, handle, offset, length)

    def _read_structured(self, wire: "_BlockingWire", session: _Session, device: BlockDevice,
                         handle: int, offset: int, length: int) -> None:
        """One NBD_REPLY_TYPE_OFFSET_DATA chunk per piece, the last one flagged DONE.

        proto.md "NBD_CMD_READ", structured replies: the server MAY split the reply into any
        number of content chunks, SHOULD keep their offsets and lengths multiples of 512
        (pieces are cut every 1 MiB from a sector: only the ends of an unaligned read are not),
        and MAY mark the last content chunk DONE when no error can follow: its data is read
        before its header is sent. A device error after some chunks ends the reply with an
        NBD_REPLY_TYPE_ERROR chunk (DONE), which tells the client to trust no chunk of it.
        """
        end = offset + length
        for start, count in _pieces(offset, length):
            try:
                data = self._device(lambda: read_bytes(device, start, count), device, "read")
            except RequestError as err:
                self._send_error(wire, session, handle, err.error)
                return
            flags = p.REPLY_FLAG_DONE if start + count == end else 0
            wire.write(_DATA_CHUNK.pack(p.STRUCTURED_REPLY_MAGIC, flags, p.REPLY_TYPE_OFFSET_DATA,
                                        handle, 8 + count, start))
            wire.write(data)
            wire.drain()

    def _read_simple(self, wire: "_BlockingWire", device: BlockDevice, handle: int,
                     offset: int, length: int) -> None:
        """The reply header, then the data piece by piece.

        proto.md "NBD_CMD_READ", simple replies: an error found before the header went out is
        sent in the header, with no data; an error found after it (the header said 0) MUST be
        answered by an immediate hard disconnect. So the first piece is read before the
        header is sent, and a later failure drops the connection.
        """
        for start, count in _pieces(offset, length):
            try:
                data = self._device(lambda: read_bytes(device, start, count), device, "read")
            except RequestError as err:
                if start != offset:
                    raise ProtocolError(f"read error at byte {start} after the reply header "
                                        f"was sent ({err})") from err
                wire.write(p.simple_reply(err.error, handle))
                return
            if start == offset:
                wire.write(p.simple_reply(0, handle))
            wire.write(data)
            wire.drain()

    def _write(self, wire: "_BlockingWire", export: Export, session: _Session, handle: int,
               offset: int, length: int) -> None:
        """NBD_CMD_WRITE, streamed: the payload is received and written piece by piece.

        The whole payload is always read (proto.md: the client MUST send *length* bytes after
        the header), even when the request is refused or a piece fails; the reply, sent after
        the last piece, carries the first error. A zero-length write (unspecified, SHOULD NOT
        disconnect) writes nothing and succeeds.

        Each piece is received straight into the connection's one preallocated buffer and
        handed to the device as a view of it, unless the unit's events are on or an --inject
        spec is set: their subscribers may keep the data they are shown, so they get a fresh
        buffer per piece (what every piece got before), and their pieces are whole
        STREAM_CHUNKs, one request event each. Unwatched, a piece is WRITE_PIPELINE bytes:
        while the host writes one, the client is already sending the next into the socket
        (after its last byte it waits for the last piece's host write, not a whole MiB's).
        Both sizes are multiples of [6.1]'s 64-sector request limit ([2.4] has none) and are
        cut from the same sector, so the device sees the same segments, and under [6.1] the
        same requests.
        """
        try:
            _check_request(export, p.CMD_WRITE, offset, length)
            error = 0
        except RequestError as err:
            error = err.error
        device = export.device
        events = getattr(device, "events", None)
        fresh = events is not None and (events.io_active
                                        or getattr(events, "injector", None) is not None)
        for start, count in _pieces(offset, length, STREAM_CHUNK if fresh else WRITE_PIPELINE):
            if fresh:
                data = memoryview(bytearray(count))
            else:
                data = wire.payload[:count]
            wire.read_into(data)
            if not error:
                try:
                    self._device(lambda: write_bytes(device, start, data), device, "write")
                except RequestError as err:
                    error = err.error
        if error:
            self._send_error(wire, session, handle, error)
        else:
            wire.write(p.simple_reply(0, handle))

    def _other(self, wire: "_BlockingWire", export: Export, session: _Session, kind: int,
               flags: int, handle: int, offset: int, length: int) -> None:
        """Every request but READ and WRITE: no data comes in, at most a small reply goes out."""
        try:
            with self._device_lock:
                data = self._execute(export, session, kind, flags, offset, length)
        except RequestError as err:
            self._send_error(wire, session, handle, err.error)
            return
        if kind == p.CMD_BLOCK_STATUS:
            wire.write(p.structured_chunk(p.REPLY_FLAG_DONE, p.REPLY_TYPE_BLOCK_STATUS,
                                          handle, len(data)))
            wire.write(data)
        else:
            wire.write(p.simple_reply(0, handle))

    @staticmethod
    def _send_error(wire: "_BlockingWire", session: _Session, handle: int, error: int) -> None:
        """An error reply: NBD_REPLY_TYPE_ERROR (DONE) when structured replies were negotiated
        (proto.md: then a READ MUST NOT get a simple reply), else a simple reply's error."""
        if session.structured:
            wire.write(p.structured_chunk(p.REPLY_FLAG_DONE, p.REPLY_TYPE_ERROR, handle, 6)
                       + struct.pack(">IH", error, 0))
        else:
            wire.write(p.simple_reply(error, handle))

    def _execute(self, export: Export, session: _Session, kind: int, flags: int, offset: int,
                 length: int) -> bytes:
        """Run one request other than READ/WRITE; the bytes to send back (BLOCK_STATUS)."""
        device = export.device
        _check_request(export, kind, offset, length)
        if kind == p.CMD_FLUSH:
            _device_errors(export.flush, lambda e: self.host_failures(device, "flush", e))
        elif kind == p.CMD_TRIM:
            if not export.discard:
                raise RequestError(errno.EINVAL)
            # A trim is advisory: only the whole sectors inside the range are discarded.
            first = -(-offset // SECTOR_SIZE) * SECTOR_SIZE
            last = (offset + length) // SECTOR_SIZE * SECTOR_SIZE
            if last > first:
                _device_errors(lambda: device.discard(first, last - first),
                               lambda e: self.host_failures(device, "discard", e))
        elif kind == p.CMD_WRITE_ZEROES:
            _device_errors(lambda: write_zeroes(export, offset, length),
                           lambda e: self.host_failures(device, "write", e))
        elif kind == p.CMD_BLOCK_STATUS:
            if not session.structured or META_CONTEXT_ID not in session.meta_ids or length == 0:
                raise RequestError(errno.EINVAL)
            return _device_errors(lambda: block_status(export, offset, length,
                                                       bool(flags & p.CMD_FLAG_REQ_ONE)))
        elif kind != p.CMD_CACHE:
            raise RequestError(errno.EINVAL)
        return b""


def _check_request(export: Export, kind: int, offset: int, length: int) -> None:
    """Refuse what the export cannot do: writes to a read-only unit (EPERM), ranges past its
    end (ENOSPC for writes, EINVAL otherwise; proto.md "Error values")."""
    writes = kind in (p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES)
    if writes and export.device.readonly:
        raise RequestError(errno.EPERM)
    if kind in (p.CMD_READ, p.CMD_WRITE, p.CMD_TRIM, p.CMD_WRITE_ZEROES,
                p.CMD_BLOCK_STATUS, p.CMD_CACHE) and offset + length > export.size:
        raise RequestError(errno.ENOSPC if writes else errno.EINVAL)


def _pieces(offset: int, length: int, size: int = STREAM_CHUNK) -> Iterator[tuple[int, int]]:
    """(start, count) pieces covering offset..offset+length; none for length 0.

    Cut every `size` bytes from the request's first sector, as the block layer splits a bio
    from its start (bio_split_rw() get_max_io_size() [6.1]): `size` being a multiple of every
    profile's request limit (cow_request_sectors, 64 sectors), the device then sees exactly
    the requests and segments of the unsplit request, so [6.1]'s read offset drift
    (device_rules.read_offset_drift) gives the same bytes as before streaming. Every piece
    but the first starts on a sector, as proto.md asks of chunks where possible.
    """
    position, end = offset, offset + length
    base = offset - offset % SECTOR_SIZE
    while position < end:
        step = min(size - (position - base) % size, end - position)
        yield position, step
        position += step


def _greeting() -> bytes:
    """The fixed newstyle server greeting (proto.md "Fixed newstyle negotiation")."""
    return struct.pack(">QQH", p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES)


def _option_reply(option: int, kind: int, data: bytes = b"") -> bytes:
    return p.OPTION_REPLY.pack(p.OPT_REPLY_MAGIC, option, kind, len(data)) + data


async def _read_option(wire: "_Wire") -> tuple[int, bytes]:
    """One option request: (option, data). Data is bounded by MAX_OPTION_LENGTH."""
    magic, option, length = p.OPTION_HEADER.unpack(await wire.readexactly(p.OPTION_HEADER.size))
    if magic != p.IHAVEOPT:
        raise ProtocolError("bad option magic")
    if length > MAX_OPTION_LENGTH:
        raise ProtocolError(f"option {option} of {length} bytes")
    return option, bytes(await wire.readexactly(length))


def read_bytes(device: BlockDevice, offset: int, length: int) -> bytes:
    """Any byte range, from whole-sector device reads."""
    first = offset - offset % SECTOR_SIZE
    end = -(-(offset + length) // SECTOR_SIZE) * SECTOR_SIZE
    if first == offset and end == offset + length:
        return device.read(offset, length)
    data = device.read(first, end - first)
    return data[offset - first:offset - first + length]


def write_bytes(device: BlockDevice, offset: int, data: bytes) -> None:
    """Any byte range: partial sectors at either end are read, patched and written back."""
    end = offset + len(data)
    first = offset - offset % SECTOR_SIZE
    last = -(-end // SECTOR_SIZE) * SECTOR_SIZE
    if first == offset and last == end:
        device.write(offset, data)
        return
    buffer = bytearray(last - first)
    if offset != first:
        buffer[:SECTOR_SIZE] = device.read(first, SECTOR_SIZE)
    if end != last:
        buffer[-SECTOR_SIZE:] = device.read(last - SECTOR_SIZE, SECTOR_SIZE)
    buffer[offset - first:end - first] = data
    device.write(first, bytes(buffer))


def write_zeroes(export: Export, offset: int, length: int) -> None:
    """NBD_CMD_WRITE_ZEROES: the device's own zeroing for the whole sectors (6.1 REQ_OP_WRITE_ZEROES),
    else, like the block layer without it, plain writes of zeros one bounded chunk at a time."""
    device, end = export.device, offset + length
    first = -(-offset // SECTOR_SIZE) * SECTOR_SIZE
    last = end // SECTOR_SIZE * SECTOR_SIZE
    if export.zeroes is not None and last > first:
        if first > offset:
            write_bytes(device, offset, bytes(min(first, end) - offset))
        export.zeroes(first, last - first)
        if end > last:
            write_bytes(device, last, bytes(end - last))
        return
    position = offset
    while position < end:
        step = min(ZERO_CHUNK, end - position)
        write_bytes(device, position, bytes(step))
        position += step


def block_status(export: Export, offset: int, length: int, only_one: bool) -> bytes:
    """A base:allocation BLOCK_STATUS payload: COW-resident bytes are data, the rest holes."""
    runs = export.allocation(offset, length) if export.allocation else [(True, offset, length)]
    descriptors = [struct.pack(">I", META_CONTEXT_ID)]
    for allocated, _start, run_length in runs:
        descriptors.append(struct.pack(">II", run_length, 0 if allocated else p.STATE_HOLE))
        if only_one or len(descriptors) > MAX_EXTENTS:
            break
    return b"".join(descriptors)


def _socket_buffers(conn: socket.socket) -> None:
    """Socket buffers that hold a whole piece (STREAM_CHUNK) and its header.

    A unix stream socket queues at most its sender's SO_SNDBUF (208 KiB by default): a 1 MiB
    read reply then went out in about ten rounds, each waiting for the client to drain the
    socket. With room for a whole piece the reply is handed to the kernel in one sendmsg.
    SO_RCVBUF is the TCP window a client's write payload may fill. The kernel caps both at
    net.core.wmem_max / rmem_max (and doubles what it grants); a refusal changes nothing.
    """
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            if conn.getsockopt(socket.SOL_SOCKET, option) < SOCKET_BUFFER:
                conn.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


class _BlockingWire:
    """The transmission phase's side of a client socket, in blocking mode, in the
    connection's own thread (module doc): a request header and a write piece each arrive in
    one recv_into (MSG_WAITALL) into buffers allocated once per connection, and a reply goes
    out in one sendmsg of its parts (header and data: no concatenation)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.header = memoryview(bytearray(p.REQUEST.size))
        self.payload = memoryview(bytearray(STREAM_CHUNK))
        self.pending: list[bytes | memoryview] = []

    def read_into(self, view: memoryview) -> None:
        """Fill `view` from the socket (IncompleteReadError at EOF)."""
        size, recv_into = len(view), self.sock.recv_into
        got = recv_into(view, size, socket.MSG_WAITALL)
        while got < size:           # a signal or a peer that closed (0 bytes) ends the wait
            more = recv_into(view[got:], size - got, socket.MSG_WAITALL)
            if not more:
                raise asyncio.IncompleteReadError(bytes(view[:got]), size)
            got += more

    def write(self, data: bytes | memoryview) -> None:
        self.pending.append(data)

    def drain(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        sent = self.sock.sendmsg(pending)
        total = sum(len(part) for part in pending)
        if sent == total:
            return
        rest = memoryview(b"".join(pending))[sent:]     # a short send: rare
        while rest:
            rest = rest[self.sock.send(rest):]

    def close(self) -> None:
        self.sock.close()


class _Wire:
    """A client socket driven by the loop's sock_* calls (the handshake).

    Not asyncio streams: in Python 3.11 a StreamWriter keeps unsent data in one bytearray and
    deletes each sent piece from its front, which is quadratic for 32 MiB read replies
    (measured: 160 MiB/s); sock_sendall sends from a memoryview, sock_recv_into fills a
    preallocated buffer.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pending: list[bytes] = []

    async def readexactly(self, size: int) -> bytes:
        if self.pending:                # a client answers only what it has received
            await self.drain()
        buffer = bytearray(size)
        view = memoryview(buffer)
        position = 0
        while position < size:
            got = await self.loop.sock_recv_into(self.sock, view[position:])
            if not got:
                raise asyncio.IncompleteReadError(bytes(buffer[:position]), size)
            position += got
        return bytes(buffer) if size < 4096 else buffer

    def write(self, data: bytes) -> None:
        self.pending.append(data)

    async def drain(self) -> None:
        pending, self.pending = self.pending, []
        small: list[bytes] = []
        for part in pending:
            if len(part) < 65536:
                small.append(part)
                continue
            if small:
                await self.loop.sock_sendall(self.sock, b"".join(small))
                small = []
            await self.loop.sock_sendall(self.sock, part)
        if small:
            await self.loop.sock_sendall(self.sock, b"".join(small))

    def close(self) -> None:
        self.sock.close()


class ServerThread:
    """An NbdServer on its own asyncio loop in a daemon thread (used by `ubdsim vm`)."""

    def __init__(self, server: NbdServer, unix_path: str) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(server.start_unix(unix_path))
            except BaseException as err:       # reported to the starting thread
                failure.append(err)
                started.set()
                return
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="ubdsim-nbd", daemon=True)
        self.thread.start()
        started.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop)
        future.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
