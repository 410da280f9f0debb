"""`ubdsim serve` driven by qemu's own NBD client tools (qemu-io, qemu-img, qemu-nbd).

COW files are made by uml_mkcow and merged by uml_moo (the real UML tools) during the run;
the expected image is an independent bytearray model of the writes.
"""
from __future__ import annotations

import errno
import json
import socket
import struct
import subprocess
import threading
from pathlib import Path


from ubdsim.cow import bitmap as bits
from ubdsim.cow.header import read_header
from ubdsim.cow.layouts import HEADER_READ_SIZE
from ubdsim.profiles import get_profile

from .serving import UBDSIM, qemu_io, serve

MIB = 1024 * 1024
SIZE = 4 * MIB


def backing_image(path: Path) -> bytearray:
    """4 MiB: 0x11 in the first half, 0x22 in the second, so COW/backing seams show."""
    content = bytearray(b"\x11" * (SIZE // 2) + b"\x22" * (SIZE // 2))
    path.write_bytes(content)
    return content


def mkcow(cow: Path, backing: Path) -> None:
    subprocess.run(["uml_mkcow", str(cow), str(backing)], check=True, capture_output=True)


def moo(cow: Path, merged: Path) -> bytes:
    subprocess.run(["uml_moo", str(cow), str(merged)], check=True, capture_output=True)
    return merged.read_bytes()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0 and "failed" not in result.stdout, result.stdout + result.stderr
    return result.stdout


# Writes that straddle sector, page, COW-run and backing-pattern boundaries.
WRITES = [(0xA1, 1000, 3000), (0xA2, SIZE // 2 - 700, 1400), (0xA3, 65536, 65536),
          (0xA4, SIZE - 512, 512)]
DISCARD = (MIB, 64 * 1024)
ZEROES = (3 * MIB + 100, 5000)


def exercise(uri: str, model: bytearray) -> None:
    """Pattern writes, verified reads, discard, write-zeroes and flush, mirrored in `model`."""
    commands = []
    for pattern, offset, length in WRITES:
        commands += [f"write -P {pattern:#x} {offset} {length}",
                     f"read -P {pattern:#x} {offset} {length}"]
        model[offset:offset + length] = bytes([pattern]) * length
    offset, length = DISCARD
    commands += [f"discard {offset} {length}", f"read -P 0 {offset} {length}"]
    model[offset:offset + length] = bytes(length)
    offset, length = ZEROES
    commands += [f"write -z {offset} {length}", f"read -P 0 {offset} {length}", "flush"]
    model[offset:offset + length] = bytes(length)
    # untouched neighbours still come from the backing file
    commands += ["read -P 0x11 0 512", f"read -P 0x22 {SIZE // 2 + 4096} 4096"]
    ok(qemu_io(uri, *commands))


def test_qemu_io_round_trip_matches_uml_moo_merge(tmp_path: Path) -> None:
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    model = backing_image(backing)
    mkcow(cow, backing)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"]) as served:
        exercise(served.uri("ubda"), model)
        # a second connection sees everything the first one wrote
        whole = ok(qemu_io(served.uri("ubda"), f"read -v {WRITES[0][1]} 16"))
        assert "a1 a1 a1" in whole
    assert backing.read_bytes() == bytes(backing_image(tmp_path / "check.img"))
    assert moo(cow, tmp_path / "merged.img") == bytes(model)


def marked_runs(cow: Path, profile: str) -> list[tuple[int, int]]:
    """(offset, length) in bytes of the sectors whose bit is set in the COW file on disk."""
    raw = cow.read_bytes()
    header = read_header(raw[:HEADER_READ_SIZE], get_profile(profile).format)
    geometry = header.geometry()
    bitmap = raw[geometry.bitmap_offset:geometry.bitmap_offset + geometry.bitmap_len]
    return [(start * 512, count * 512) for allocated, start, count
            in bits.iter_runs(bitmap, 0, geometry.sectors) if allocated]


def test_qemu_img_map_shows_exactly_the_marked_sectors(tmp_path: Path) -> None:
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    backing_image(backing)
    mkcow(cow, backing)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"]) as served:
        exercise(served.uri("ubda"), bytearray(SIZE))
        mapped = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw",
                                 served.uri("ubda")], capture_output=True, text=True, check=True)
    data = [(e["start"], e["length"]) for e in json.loads(mapped.stdout) if e["data"]]
    expected = marked_runs(cow, "6.1")
    assert expected and data == expected
    # discard and write-zeroes set the bits too (ubd_kern.c REQ_OP_DISCARD [6.1])
    assert any(start <= DISCARD[0] < start + length for start, length in data)


def test_qemu_img_compare_with_merged_image(tmp_path: Path) -> None:
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    model = backing_image(backing)
    mkcow(cow, backing)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"]) as served:
        exercise(served.uri("ubda"), model)
    merged = tmp_path / "merged.img"
    moo(cow, merged)
    different = tmp_path / "different.img"
    different.write_bytes(bytes(model[:-1]) + b"\x99")
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"],
               options=("--no-block-status",)) as served:
        same = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                               served.uri("ubda"), str(merged)], capture_output=True, text=True)
        differs = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                                  served.uri("ubda"), str(different)], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    # qemu-img reports the first differing sector
    assert differs.returncode == 1 and f"mismatch at offset {SIZE - 512}!" in differs.stdout


def test_exports_are_named_as_the_kernel_names_disks(tmp_path: Path) -> None:
    images = []
    for n in range(2):
        image = tmp_path / f"d{n}.img"
        image.write_bytes(bytes(MIB))
        images.append(image)
    for kernel, names in (("6.1", ["ubda", "ubdb"]), ("2.4", ["ubd0", "ubd1"])):
        with serve(tmp_path / "s", [f"ubd{n}={image}" for n, image in enumerate(images)],
                   kernel=kernel) as served:
            listing = subprocess.run(["qemu-nbd", "-L", "-k", served.socket],
                                     capture_output=True, text=True, check=True).stdout
            # the other spelling of a disk's name is accepted too, as `ubdsim run` accepts it
            other = {"ubda": "ubd0", "ubd0": "ubda"}[names[0]]
            ok(qemu_io(served.uri(other), "read -P 0 0 512", readonly=True))
        assert [line.split("'")[1] for line in listing.splitlines()
                if line.strip().startswith("export:")] == names
        assert "base:allocation" in listing


def test_unaligned_requests_are_read_modify_written(tmp_path: Path) -> None:
    """A client that did not ask for NBD_INFO_BLOCK_SIZE may send any byte range."""
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    model = backing_image(backing)
    mkcow(cow, backing)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"]) as served:
        sock = handshake(served.socket, "ubda")
        try:
            assert request(sock, 1, 1000, b"\x77" * 100) == 0              # WRITE 1000+100
            model[1000:1100] = b"\x77" * 100
            assert request(sock, 6, SIZE // 2 - 3, length=10) == 0         # WRITE_ZEROES
            model[SIZE // 2 - 3:SIZE // 2 + 7] = bytes(10)
            assert request(sock, 0, 990, length=120) == 0                  # READ 990+120
            assert sock.recv(120, socket.MSG_WAITALL) == bytes(model[990:1110])
        finally:
            sock.close()
    assert moo(cow, tmp_path / "merged.img") == bytes(model)


def handshake(path: str, export: str) -> socket.socket:
    """A minimal fixed-newstyle client (NBD_OPT_GO, simple replies) for what qemu won't send."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    magic, opt, flags = struct.unpack(">QQH", sock.recv(18, socket.MSG_WAITALL))
    assert (magic, opt) == (0x4E42444D41474943, 0x49484156454F5054) and flags & 1
    sock.sendall(struct.pack(">I", 3))
    name = export.encode()
    payload = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(payload)) + payload)
    while True:
        _, _, kind, length = struct.unpack(">QIII", sock.recv(20, socket.MSG_WAITALL))
        sock.recv(length, socket.MSG_WAITALL) if length else b""
        if kind == 1:           # NBD_REP_ACK
            return sock
        assert kind == 3, hex(kind)


def request(sock: socket.socket, kind: int, offset: int, data: bytes = b"", length: int = 0
            ) -> int:
    sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, kind, 7, offset, length or len(data)) + data)
    magic, error, handle = struct.unpack(">IIQ", sock.recv(16, socket.MSG_WAITALL))
    assert magic == 0x67446698 and handle == 7
    return error


def test_read_only_unit_refuses_writes_with_eperm(tmp_path: Path) -> None:
    image = tmp_path / "ro.img"
    image.write_bytes(b"\x5a" * MIB)
    with serve(tmp_path / "s", [f"ubd0r={image}"]) as served:
        ok(qemu_io(served.uri("ubda"), "read -P 0x5a 0 4096", readonly=True))
        refused = qemu_io(served.uri("ubda"), "write -P 1 0 512")
        assert refused.returncode != 0 and "Permission denied" in refused.stderr   # qemu: EPERM
        sock = handshake(served.socket, "ubda")
        try:
            assert request(sock, 1, 0, b"\1" * 512) == errno.EPERM           # WRITE
            assert request(sock, 4, 0, length=512) == errno.EPERM           # TRIM
            assert request(sock, 6, 0, length=512) == errno.EPERM           # WRITE_ZEROES
            assert request(sock, 0, MIB, length=512) == errno.EINVAL        # READ past end
            assert request(sock, 3, 0) == 0                                 # FLUSH
        finally:
            sock.close()
    assert image.read_bytes() == b"\x5a" * MIB


def test_several_clients_at_once(tmp_path: Path) -> None:
    backing, cow = tmp_path / "back.img", tmp_path / "disk.cow"
    model = backing_image(backing)
    mkcow(cow, backing)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"]) as served:
        idle = handshake(served.socket, "ubda")         # a client that just sits there
        results: dict[int, subprocess.CompletedProcess] = {}

        def client(n: int) -> None:
            base = n * MIB
            commands = [f"write -P {0xB0 + n:#x} {base + k * 8192} 4096" for k in range(64)]
            commands += [f"read -P {0xB0 + n:#x} {base + k * 8192} 4096" for k in range(64)]
            results[n] = qemu_io(served.uri("ubda"), *commands)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for n in range(3):
            ok(results[n])
            for k in range(64):
                model[n * MIB + k * 8192:n * MIB + k * 8192 + 4096] = bytes([0xB0 + n]) * 4096
        assert request(idle, 0, 0, length=512) == 0
        idle.recv(512, socket.MSG_WAITALL)
        idle.close()
    assert moo(cow, tmp_path / "merged.img") == bytes(model)


def test_no_unit_opens_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "missing.img"
    done = subprocess.run([UBDSIM, "serve", "--kernel", "6.1", "--unix", str(tmp_path / "s"),
                           f"ubd0={tmp_path / 'c.cow'},{missing}"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == "ubdsim serve: error: no unit opened, nothing to export"
    assert not (tmp_path / "s").exists() and not (tmp_path / "c.cow").exists()


def synced_files(tmp_path: Path, flush_mode: str) -> list[str]:
    """The host files `ubdsim serve --flush MODE` fsyncs/fdatasyncs for one client flush
    (strace -y shows each fd's path)."""
    backing, cow, log = tmp_path / "back.img", tmp_path / f"{flush_mode}.cow", tmp_path / "strace"
    backing_image(backing)
    mkcow(cow, backing)
    with serve(tmp_path / "s", [f"ubd0={cow},{backing}"], options=("--flush", flush_mode),
               prefix=("strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(log))
               ) as served:
        ok(qemu_io(served.uri("ubda"), "write -P 0x42 0 4096", "flush"))
    calls = [line.split(None, 1)[1] for line in log.read_text().splitlines() if "sync(" in line]
    return [call.split("<", 1)[1].split(">", 1)[0] + " " + call.split("(", 1)[0]
            for call in calls]


def test_flush_kernel_syncs_nothing_like_the_driver_and_fsync_makes_writes_durable(
        tmp_path: Path) -> None:
    # ubd_kern.c ubd_submit_request() / io_thread() [6.1]: REQ_OP_FLUSH gets no I/O
    # descriptor, so do_io()'s fdatasync(fds[0]) is never reached: no host sync at all
    # (measured with linux.uml: tests/kernel_ref/test_host_syncs.py)
    assert synced_files(tmp_path, "kernel") == []
    # --flush fsync, ubdsim's own: each flush fsyncs the COW file, never the backing file
    # (qemu-io flushes again when it closes the image)
    durable = synced_files(tmp_path, "fsync")
    assert durable and set(durable) == {f"{tmp_path / 'fsync.cow'} fsync"}


def test_serve_prints_the_kernel_messages_ubdsim_run_prints(tmp_path: Path) -> None:
    words = ["ubd0=disk.cow,back.img", "ubd1=missing.img", "ubd2r=back.img"]
    logs = []
    for command in ("run", "serve"):
        work = tmp_path / command
        work.mkdir()
        backing_image(work / "back.img")
        if command == "run":
            done = subprocess.run([UBDSIM, "run", "--kernel", "6.1", *words, "--", "true"],
                                  cwd=work, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            logs.append(done.stderr.splitlines())
        else:
            with serve(work / "s", words, cwd=work) as served:
                logs.append(served.kernel_lines)
    assert logs[0] and logs[0] == logs[1]
    assert 'Creating "disk.cow" as COW file for "back.img"' in logs[1]


def option(sock: socket.socket, number: int, payload: bytes = b"") -> tuple[int, bytes]:
    sock.sendall(struct.pack(">QII", 0x49484156454F5054, number, len(payload)) + payload)
    magic, echoed, kind, length = struct.unpack(">QIII", sock.recv(20, socket.MSG_WAITALL))
    assert magic == 0x3E889045565A9 and echoed == number
    return kind, sock.recv(length, socket.MSG_WAITALL) if length else b""


def test_export_name_abort_and_unknown_exports(tmp_path: Path) -> None:
    image = tmp_path / "ro.img"
    image.write_bytes(b"\x5a" * MIB)
    with serve(tmp_path / "s", [f"ubd0r={image}"]) as served:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(served.socket)
        sock.recv(18, socket.MSG_WAITALL)
        sock.sendall(struct.pack(">I", 3))
        unknown = struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0)
        assert option(sock, 7, unknown)[0] == 0x80000006             # GO: NBD_REP_ERR_UNKNOWN
        assert option(sock, 99)[0] == 0x80000001                      # NBD_REP_ERR_UNSUP
        assert option(sock, 2) == (1, b"")                            # ABORT: ACK, then EOF
        assert sock.recv(1) == b""
        sock.close()

        sock = socket.socket(socket.AF_UNIX)
        sock.connect(served.socket)
        sock.recv(18, socket.MSG_WAITALL)
        sock.sendall(struct.pack(">I", 1))                            # fixed newstyle, zeroes
        sock.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 4) + b"ubda")   # EXPORT_NAME
        size, flags = struct.unpack(">QH", sock.recv(10, socket.MSG_WAITALL))
        assert sock.recv(124, socket.MSG_WAITALL) == bytes(124)
        assert size == MIB and flags & 3 == 3                         # HAS_FLAGS | READ_ONLY
        assert request(sock, 0, 512, length=512) == 0
        assert sock.recv(512, socket.MSG_WAITALL) == b"\x5a" * 512
        sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 2, 8, 0, 0))   # DISC
        assert sock.recv(1) == b""
        sock.close()
