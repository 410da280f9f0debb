"""`ubdsim serve` against clients that stall, crowd in, ask for zero bytes or for 32 MiB.

Real clients only: libnbd (Debian's python3-libnbd, run by /usr/bin/python3, the Python its
bindings are built for), qemu-io and qemu-img, qemu-nbd as the oracle for the bytes of a reply,
and raw sockets where a client must misbehave on purpose (stop reading its reply). The server
is always the real `ubdsim serve` subprocess (tests/nbd/serving.py).
"""
from __future__ import annotations

import hashlib
import random
import socket
import struct
import subprocess
from pathlib import Path

from .serving import Served, qemu_io, serve
from .test_serve import handshake, moo, ok, option, request

MIB = 1024 * 1024
BIG = 32 * MIB                       # the server's advertised maximum block size
LIBNBD_PYTHON = "/usr/bin/python3"   # python3-libnbd's `nbd` module lives in its dist-packages
STRUCTURED_MAGIC, SIMPLE_MAGIC = 0x668E33EF, 0x67446698
READ, WRITE, DISC = 0, 1, 2
REPLY_FLAG_DONE, REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA = 1, 0, 1
NBD_REP_ERR_POLICY = 0x80000002


def libnbd(script: str, *args: str) -> str:
    """Run `script` (with `nbd` and `sys` imported) in a libnbd client process; its stdout."""
    done = subprocess.run([LIBNBD_PYTHON, "-c", "import nbd, sys\n" + script, *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def option_reply(sock: socket.socket) -> tuple[int, bytes]:
    """The next option reply: (reply type, data)."""
    magic, _option, kind, length = struct.unpack(">QIII", sock.recv(20, socket.MSG_WAITALL))
    assert magic == 0x3E889045565A9
    return kind, sock.recv(length, socket.MSG_WAITALL) if length else b""


def structured_client(path: str, export: str) -> socket.socket:
    """A raw fixed-newstyle client that negotiates structured replies, then NBD_OPT_GO."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.recv(18, socket.MSG_WAITALL)
    sock.sendall(struct.pack(">I", 3))                       # FIXED_NEWSTYLE | NO_ZEROES
    assert option(sock, 8) == (1, b"")                       # NBD_OPT_STRUCTURED_REPLY: ACK
    name = export.encode()
    kind, _ = option(sock, 7, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    while kind == 3:                                         # NBD_REP_INFO..., then ACK
        kind, _ = option_reply(sock)
    assert kind == 1, hex(kind)
    return sock


def send_request(sock: socket.socket, kind: int, handle: int, offset: int, length: int) -> None:
    sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, kind, handle, offset, length))


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes (/proc/PID/status)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


# ---- zero-length reads ----------------------------------------------------------------------

ZERO_READ = """
h = nbd.NBD()
h.set_request_structured_replies(sys.argv[2] == "structured")
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ZERO_SIZE)   # let the request go out
h.connect_uri(sys.argv[1])
print(h.get_structured_replies_negotiated(), repr(bytes(h.pread(0, 4096))),
      h.pread(512, 4096) == b"\\x5a" * 512)
"""


def test_zero_length_read_keeps_libnbd_connected(tmp_path: Path) -> None:
    """A zero-length READ with structured replies used to get an OFFSET_DATA chunk of length 8
    (proto.md: at least 9), and libnbd dropped the connection ("range of structured reply is
    out of bounds"). Now the reply is empty and the next read on the same handle works."""
    image = tmp_path / "disk.img"
    image.write_bytes(b"\x5a" * MIB)
    with serve(tmp_path / "s", [f"ubd0={image}"]) as served:
        for mode in ("structured", "simple"):
            out = libnbd(ZERO_READ, served.uri("ubda"), mode)
            assert out == f"{mode == 'structured'} b'' True\n", (mode, out)


def zero_length_read_replies(path: str, export: str) -> tuple[bytes, bytes]:
    """The raw bytes a server answers to READ(offset 4096, length 0), with structured replies
    (20 bytes: one chunk header) and with simple replies (16 bytes), on two connections."""
    structured = structured_client(path, export)
    send_request(structured, READ, 7, 4096, 0)
    chunk = structured.recv(20, socket.MSG_WAITALL)
    structured.close()
    simple = handshake(path, export)
    send_request(simple, READ, 7, 4096, 0)
    header = simple.recv(16, socket.MSG_WAITALL)
    simple.close()
    return chunk, header


def test_zero_length_read_reply_bytes_match_qemu_nbd(tmp_path: Path) -> None:
    """The oracle: qemu-nbd 7.2 answers a zero-length structured READ with a lone
    NBD_REPLY_TYPE_NONE chunk flagged DONE (proto.md: a content chunk MUST describe at least
    one byte); ubdsim serve sends the same bytes, in both reply modes."""
    image = tmp_path / "disk.img"
    image.write_bytes(b"\x5a" * MIB)
    qemu_sock, pid_file = tmp_path / "q.sock", tmp_path / "q.pid"
    # --fork returns once the socket listens; --persistent survives our two connections
    subprocess.run(["qemu-nbd", "--fork", "--persistent", f"--pid-file={pid_file}", "-f", "raw",
                    "-k", str(qemu_sock), str(image)], check=True, timeout=60)
    try:
        oracle = zero_length_read_replies(str(qemu_sock), "")
    finally:
        subprocess.run(["kill", pid_file.read_text().strip()], check=True)
    with serve(tmp_path / "s", [f"ubd0r={image}"]) as served:
        ours = zero_length_read_replies(served.socket, "ubda")
    expected = (struct.pack(">IHHQI", STRUCTURED_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_NONE, 7, 0),
                struct.pack(">IIQ", SIMPLE_MAGIC, 0, 7))
    assert oracle == expected
    assert ours == oracle


# ---- stalled clients: bounded memory ----------------------------------------------------

def stall_readers(served: Served, count: int, structured: bool
                  ) -> tuple[list[socket.socket], list[tuple[int, int]]]:
    """Clients that each ask for a 32 MiB read and read only the first reply header; the
    sockets, and (flags, length) of each first structured chunk.

    Getting that header shows the server took up the request; then the client reads nothing
    more, so the server's sends block once the socket buffer is full.
    """
    clients, chunks = [], []
    for n in range(count):
        if structured:
            sock = structured_client(served.socket, "ubda")
            send_request(sock, READ, n, 4096 * n, BIG)
            magic, flags, kind, handle, length = struct.unpack(
                ">IHHQI", sock.recv(20, socket.MSG_WAITALL))
            assert (magic, kind, handle) == (STRUCTURED_MAGIC, REPLY_TYPE_OFFSET_DATA, n)
            chunks.append((flags, length))
        else:
            sock = handshake(served.socket, "ubda")
            send_request(sock, READ, 7, 4096 * n, BIG)
            assert struct.unpack(">IIQ", sock.recv(16, socket.MSG_WAITALL)) == (SIMPLE_MAGIC, 0, 7)
        clients.append(sock)
    return clients, chunks


def stall_writers(served: Served, count: int) -> list[socket.socket]:
    """Clients that each announce a 32 MiB write, send its first MiB and stop.

    sendall() of that MiB returns only once the server has taken most of it off the socket
    (a unix socket queues about 200 KiB), so the server is reading the payload by then.
    """
    clients = []
    for n in range(count):
        sock = handshake(served.socket, "ubda")
        send_request(sock, WRITE, 7, BIG * (n % 2), BIG)
        sock.sendall(bytes([0xC0 + n]) * MIB)
        clients.append(sock)
    return clients


def test_stalled_clients_hold_a_bounded_amount_of_server_memory(tmp_path: Path) -> None:
    """12 clients that stall on 32 MiB requests (4 simple reads, 4 structured reads, 4 writes)
    used to pin 12 x 32 MiB of the server's memory; now each pins about one 1 MiB piece.

    VmHWM is the server process's peak RSS since it started, so a buffer allocated for a
    moment counts too; a qemu-io client is served meanwhile, so the loop is not blocked."""
    image = tmp_path / "big.img"
    with image.open("wb") as f:
        f.truncate(2 * BIG)
    with serve(tmp_path / "s", [f"ubd0={image}"]) as served:
        before = status(served.process.pid)
        simple, _ = stall_readers(served, 4, structured=False)
        structured, chunks = stall_readers(served, 4, structured=True)
        clients = simple + structured + stall_writers(served, 4)
        try:
            ok(qemu_io(served.uri("ubda"), "read -P 0 16M 64k"))    # no writer touched it
            after = status(served.process.pid)
        finally:
            for sock in clients:
                sock.close()
    stalled = 12 * BIG
    growth = after["VmHWM"] - before["VmRSS"]
    report = (f"RSS before {before['VmRSS'] / MIB:.1f} MiB, "
              f"peak after {after['VmHWM'] / MIB:.1f} MiB")
    assert after["VmHWM"] < 150 * MIB, report
    assert growth < stalled // 8, report     # 48 MiB: ~4 MiB per stalled client at most
    # each structured reply is the first of several OFFSET_DATA chunks: not DONE, <= 1 MiB
    assert all(flags == 0 and 8 < length <= 8 + MIB for flags, length in chunks), chunks


# ---- --max-connections ----------------------------------------------------------------------

REFUSED = """
h = nbd.NBD()
try:
    h.connect_uri(sys.argv[1])
except nbd.Error as err:
    print("refused:", err.string)
"""


def test_client_over_the_limit_is_refused_and_the_others_keep_working(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\x5a" * MIB)
    with serve(tmp_path / "s", [f"ubd0={image}"], options=("--max-connections", "2")) as served:
        first, second = handshake(served.socket, "ubda"), handshake(served.socket, "ubda")

        # the third client: qemu shows the server's message, libnbd the policy refusal
        refused = qemu_io(served.uri("ubda"), "read 0 512")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "server reported: too many clients: this server serves 2 at once" in refused.stderr
        assert libnbd(REFUSED, served.uri("ubda")).startswith(
            "refused: nbd_connect_uri: handshake: server policy prevents NBD_OPT_GO")
        # on the wire: the greeting, NBD_REP_ERR_POLICY with the message, ABORT acknowledged
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(served.socket)
        assert raw.recv(18, socket.MSG_WAITALL)[:16] == b"NBDMAGICIHAVEOPT"
        raw.sendall(struct.pack(">I", 3))
        kind, message = option(raw, 7, struct.pack(">I", 4) + b"ubda" + struct.pack(">H", 0))
        assert kind == NBD_REP_ERR_POLICY and message.startswith(b"too many clients")
        assert option(raw, 2) == (1, b"") and raw.recv(1) == b""
        raw.close()

        # the first two were not disturbed
        for sock in (first, second):
            assert request(sock, READ, 4096, length=512) == 0
            assert sock.recv(512, socket.MSG_WAITALL) == b"\x5a" * 512
        # a slot is free as soon as its client is gone (the server closes after freeing it)
        send_request(first, DISC, 8, 0, 0)
        assert first.recv(1) == b""
        first.close()
        ok(qemu_io(served.uri("ubda"), "read -P 0x5a 0 64k"))
        assert request(second, READ, 0, length=512) == 0
        assert second.recv(512, socket.MSG_WAITALL) == b"\x5a" * 512
        second.close()


# ---- streamed data is the right data --------------------------------------------------------

STREAMED = """
h = nbd.NBD()
h.set_request_structured_replies(sys.argv[2] == "structured")
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)    # send unaligned requests as is
h.connect_uri(sys.argv[1])
assert h.get_structured_replies_negotiated() == (sys.argv[2] == "structured")
offset, length = int(sys.argv[3]), int(sys.argv[4])
if len(sys.argv) > 5:
    h.pwrite(open(sys.argv[5], "rb").read(), offset)
sys.stdout.write(__import__("hashlib").sha256(h.pread(length, offset)).hexdigest())
"""


def digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def test_streamed_reads_and_writes_carry_the_right_bytes(tmp_path: Path) -> None:
    """32 MiB requests at unaligned offsets (so the first and last pieces end mid-sector)
    through libnbd, with structured and simple replies; qemu-img convert reads the whole
    export back, and uml_moo merges the COW file, both compared with an independent model.

    Kernel 2.4 (its COW format, which the server creates): its reads return the file bytes.
    Under 6.1 a read whose 4 KiB segment mixes COW and backing sectors shifts the rest of its
    request (device_rules.read_offset_drift, measured on linux.uml), so a plain byte model
    does not apply there."""
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    model = bytearray(random.Random(9).randbytes(40 * MIB))
    backing.write_bytes(model)                   # the COW file: created by serve, as 2.4 does
    payload = tmp_path / "payload"
    written = random.Random(10).randbytes(BIG - 1500)
    payload.write_bytes(written)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"], kernel="2.4") as served:
        uri = served.uri("ubd0")
        offset = 3 * MIB + 777                      # a write through the COW file, streamed
        assert libnbd(STREAMED, uri, "structured", str(offset), str(BIG - 1500),
                      str(payload)) == digest(written)
        model[offset:offset + len(written)] = written
        for mode, start, length in (("structured", 999, BIG), ("simple", 999, BIG),
                                    ("simple", 8 * MIB - 3, 5 * MIB + 6)):
            assert libnbd(STREAMED, uri, mode, str(start), str(length)) == digest(
                model[start:start + length]), (mode, start, length)
        copy = tmp_path / "copy.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(copy)],
                       check=True, capture_output=True, timeout=300)
        assert copy.read_bytes() == model
    assert moo(cow, tmp_path / "merged.img") == bytes(model)


SEQUENCE = """
import hashlib, random
h = nbd.NBD()
h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)    # send unaligned requests as is
h.connect_uri(sys.argv[1])
rng, size = random.Random(int(sys.argv[2])), h.get_size()
for _ in range(40):
    length = rng.choice([512, 4096, 65536 + 512, 256 * 1024, 3 * 1024 * 1024 + 100,
                         rng.randrange(1, 2 * 1024 * 1024)])
    offset = rng.randrange(0, size - length)
    if rng.random() < 0.3:
        offset -= offset % 512
    if rng.random() < 0.6:
        h.pwrite(rng.randbytes(length), offset)
    else:
        print(offset, length, hashlib.sha256(h.pread(length, offset)).hexdigest())
"""


def test_unwatched_writes_leave_what_watched_ones_leave(tmp_path: Path) -> None:
    """Both of the server's write paths on one random request sequence per kernel: unwatched
    (256 KiB pieces into one buffer, Unit.write's two host writes per piece) and watched by
    --trace (1 MiB pieces, the kernel's own per-segment data and word-pair writes). The COW
    files end byte for byte the same and every read between the writes returns the same
    bytes (under 6.1 with its offset drift: the same requests reach the device)."""
    backing = tmp_path / "back.img"
    backing.write_bytes(random.Random(11).randbytes(24 * MIB + 512 * 3))
    for kernel, seed in (("6.1", 1), ("6.1", 2), ("2.4", 3)):
        results = []
        for watched in (False, True):
            cow = tmp_path / f"{kernel}-{seed}-{watched}.cow"
            options = ("--trace", str(tmp_path / "trace.txt")) if watched else ()
            export = "ubda" if kernel == "6.1" else "ubd0"
            with serve(tmp_path / "s", [f"ubd0={cow},{backing}"], kernel=kernel,
                       options=options) as served:
                reads = libnbd(SEQUENCE, served.uri(export), str(seed))
            results.append((reads, cow.read_bytes()))
        assert results[0][0].count("\n") >= 8, results[0][0]
        assert results[0] == results[1], (kernel, seed)
    assert "write" in (tmp_path / "trace.txt").read_text()
