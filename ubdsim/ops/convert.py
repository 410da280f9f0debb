"""Converting between UML COW files, raw images and qcow2 overlays (`ubdsim convert`).

A UML COW file and a qcow2 overlay over a raw backing file are the same idea: a private top
layer that holds what the guest wrote, over a shared read-only image. They differ in grain
(a COW file marks 512-byte sectors, qcow2 allocates clusters, 64 KiB by default) and in what
they record about the backing file (COW: its absolute path, size and mtime, all checked;
qcow2: a name, possibly relative to the overlay, and a format, nothing checked). So:

- COW (+backing) or raw -> raw: the device, as `ubdsim moo` writes it (sparse: holes and
  zero blocks are not written; temporary name, fsync, rename), read through the device view;
- COW (+backing) -> qcow2: `qemu-img create -f qcow2 -b BACKING -F raw`, then only the COW
  file's marked runs are written into it (a raw source gives a standalone qcow2 holding its
  data runs). The writes go through `qemu-nbd` on a private Unix socket: one process for any
  number of runs, the data streamed from the COW file, marked holes sent as WRITE_ZEROES
  (qcow2 zero clusters, which shadow the backing file as the marks do). Chosen over the
  alternatives because each of them loses something: `qemu-io write -s FILE` needs a file per
  run and holds a whole run in memory; `qemu-img dd` cannot write into an existing image;
  `qemu-img convert` of a merged image (even with -B) allocates every data cluster, not just
  the written ones. A qcow2 cluster partly covered by marks is filled from the backing file
  by qemu itself (copy-on-write), so the overlay shows the same bytes;
- qcow2 overlay over a raw file -> COW: a V3 COW file over the overlay's raw backing file,
  as `ubdsim mkcow` makes it, then every range the overlay itself allocates (`qemu-img map`
  of the overlay opened with no backing file: present = allocated at depth 0) is marked, and
  its data, read from `qemu-nbd -r`, is written into the data area (zero clusters are marked
  and left as holes). A cluster marks all its sectors: their data is what the guest sees;
- qcow2 -> raw: `qemu-img convert -O raw`, into a temporary name, renamed into place.

Every output is built under a temporary name beside its target (fileio.new_file_beside) and
appears whole or not at all; qemu's tools are given that temporary path, which is in the
target's directory, so a relative backing name resolves as it will for the final file.
"""
from __future__ import annotations

import errno as _errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from ..cow import bitmap as bm
from ..cow.create import backing_size, header_for_backing, write_cow
from ..cow.image import CHUNK_BYTES, CowImage
from ..errors import BackingError, BackingMissing, DeviceIOError, RefusedFile, UbdError, UsageError
from ..fileio import new_file_beside, refuse_non_disk, shown
from ..nbd import protocol as nbd
from .device_view import DeviceView, open_device, probe_kind
from .merge import named_write_errors, refuse_output, check_backing, write_nonzero

FORMATS = ("raw", "qcow2", "cow")
NBD_CHUNK = 1 << 20             # bytes per NBD request (qemu-nbd takes up to 32 MiB)
NBD_ZERO_CHUNK = 1 << 30        # bytes per WRITE_ZEROES request
NBD_START_SECONDS = 30.0        # how long qemu-nbd may take to start listening
SECTOR = 512                    # qemu's size granularity: virtual sizes round up to it

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion wrote (the `--json` summary of `ubdsim convert`)."""

    source: str
    source_format: str           # "cow", "raw" or "qcow2"
    output: str
    output_format: str           # "raw", "qcow2" or "cow"
    backing: str | None          # the backing file read or named
    backing_name: str | None     # as recorded in the output's header (qcow2 or COW)
    size: int                    # device size of the output
    ranges: int                  # top-layer runs carried over (marked runs / allocated ranges)
    bytes_copied: int            # data bytes written
    bytes_zeroed: int            # bytes carried over as zeros (zero clusters, marked holes)
    commands: list[list[str]] = field(default_factory=list)   # the qemu commands run
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# -- running qemu's tools ----------------------------------------------------------------------
def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UbdError(f"{name} is not installed (Debian package qemu-utils); it is needed for "
                       "qcow2 images", errno=_errno.ENOENT)
    return found


def _qemu(argv: list[str], log: list[list[str]]) -> str:
    """Run a qemu tool; its failure becomes one line with qemu's own last words."""
    log.append(argv)
    done = subprocess.run([_tool(argv[0]), *argv[1:]], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise UbdError(f"{argv[0]} {argv[1]} failed: {_last_line(done.stderr)}", errno=_errno.EIO)
    return done.stdout


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _temp_path(fd: int) -> str:
    """The path of new_file_beside()'s temporary file, to hand to qemu's tools."""
    return os.readlink(f"/proc/self/fd/{fd}")


def _qcow2_spec(path: str, backing: str | None) -> str:
    """A `json:` filename: the qcow2 file `path` over the raw file `backing` (None: no backing).

    Naming the backing file here (instead of trusting the overlay's header) is what makes
    `-b` work for an overlay whose recorded backing name is wrong, and opening it with no
    backing at all lets `qemu-img map` report exactly the clusters the overlay allocates.
    """
    spec: dict = {"driver": "qcow2", "file": {"driver": "file", "filename": os.path.abspath(path)}}
    spec["backing"] = None if backing is None else {
        "driver": "raw", "file": {"driver": "file", "filename": os.path.abspath(backing)}}
    return "json:" + json.dumps(spec, separators=(",", ":"))


class _NbdClient:
    """The few NBD requests convert needs (fixed newstyle, NBD_OPT_EXPORT_NAME, simple replies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.handle = 0
        if self._recv(8) != nbd.NBDMAGIC.to_bytes(8, "big") or \
                int.from_bytes(self._recv(8), "big") != nbd.IHAVEOPT:
            raise DeviceIOError("qemu-nbd did not greet as an NBD server")
        server_flags = int.from_bytes(self._recv(2), "big")
        no_zeroes = server_flags & nbd.FLAG_NO_ZEROES
        sock.sendall((nbd.FLAG_FIXED_NEWSTYLE | no_zeroes).to_bytes(4, "big"))
        sock.sendall(nbd.OPTION_HEADER.pack(nbd.IHAVEOPT, nbd.OPT_EXPORT_NAME, 0))
        self.size = int.from_bytes(self._recv(8), "big")
        self.flags = int.from_bytes(self._recv(2), "big")
        if not no_zeroes:
            self._recv(124)

    def _recv(self, n: int, into: memoryview | None = None) -> bytes | memoryview:
        out = into if into is not None else memoryview(bytearray(n))
        done = 0
        while done < n:
            got = self.sock.recv_into(out[done:n])
            if got == 0:
                raise DeviceIOError("qemu-nbd closed the connection")
            done += got
        return out if into is not None else bytes(out)

    def _request(self, kind: int, offset: int, length: int, payload: memoryview | None = None,
                 into: memoryview | None = None) -> None:
        self.handle += 1
        self.sock.sendall(nbd.REQUEST.pack(nbd.REQUEST_MAGIC, 0, kind, self.handle, offset, length))
        if payload is not None:
            self.sock.sendall(payload)
        magic, error, handle = nbd.SIMPLE_REPLY.unpack(self._recv(nbd.SIMPLE_REPLY.size))
        if magic != nbd.SIMPLE_REPLY_MAGIC or handle != self.handle:
            raise DeviceIOError("qemu-nbd sent a reply out of protocol")
        if error:
            raise DeviceIOError(f"qemu-nbd refused a request at offset {offset}: "
                                f"{os.strerror(error)}", errno=error)
        if into is not None:
            self._recv(length, into)

    def read(self, offset: int, out: memoryview) -> None:
        self._request(nbd.CMD_READ, offset, len(out), into=out)

    def write(self, offset: int, data: memoryview) -> None:
        self._request(nbd.CMD_WRITE, offset, len(data), payload=data)

    def write_zeroes(self, offset: int, length: int) -> None:
        if not self.flags & nbd.TFLAG_SEND_WRITE_ZEROES:
            zeros = memoryview(bytes(min(length, NBD_CHUNK)))
            for at in range(offset, offset + length, NBD_CHUNK):
                self.write(at, zeros[:min(NBD_CHUNK, offset + length - at)])
            return
        for at in range(offset, offset + length, NBD_ZERO_CHUNK):
            self._request(nbd.CMD_WRITE_ZEROES, at, min(NBD_ZERO_CHUNK, offset + length - at))

    def flush(self) -> None:
        if self.flags & nbd.TFLAG_SEND_FLUSH:
            self._request(nbd.CMD_FLUSH, 0, 0)

    def disconnect(self) -> None:
        self.handle += 1
        self.sock.sendall(nbd.REQUEST.pack(nbd.REQUEST_MAGIC, 0, nbd.CMD_DISC, self.handle, 0, 0))


@contextmanager
def _qemu_nbd(image: str, log: list[list[str]], *, read_only: bool,
              fmt: str | None = None) -> Iterator[_NbdClient]:
    """qemu-nbd serving `image` on a private socket, for one client: us.

    qemu-nbd exits by itself when its only client disconnects; a clean exit (status 0) is
    waited for, so every write is in the file before it is published. On any error the
    process we started is killed (by its pid) and its last line of stderr is the message.
    """
    directory = tempfile.mkdtemp(prefix="ubdsim-nbd.")
    sock_path = os.path.join(directory, "sock")
    argv = ["qemu-nbd", "--socket", sock_path, "--cache", "writeback"]
    argv += ["--read-only"] if read_only else []
    argv += ["--format", fmt] if fmt else []
    argv.append(image)
    log.append(argv)
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen([_tool("qemu-nbd"), *argv[1:]], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=errors)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        deadline = time.monotonic() + NBD_START_SECONDS
        while True:
            try:
                sock.connect(sock_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if proc.poll() is not None:
                    raise UbdError(f"qemu-nbd failed: {_last_line(_read_all(errors))}",
                                   errno=_errno.EIO) from None
                if time.monotonic() > deadline:
                    raise UbdError(f"qemu-nbd did not listen within {NBD_START_SECONDS:.0f} s",
                                   errno=_errno.ETIMEDOUT) from None
                time.sleep(0.005)
        client = _NbdClient(sock)
        yield client
        client.flush()
        client.disconnect()
        sock.close()
        if proc.wait() != 0:
            raise UbdError(f"qemu-nbd failed: {_last_line(_read_all(errors))}", errno=_errno.EIO)
    except DeviceIOError as err:
        if proc.poll() is not None and proc.returncode != 0:
            raise UbdError(f"qemu-nbd failed: {_last_line(_read_all(errors))}",
                           errno=_errno.EIO) from None
        raise err
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        errors.close()
        shutil.rmtree(directory, ignore_errors=True)


def _read_all(f) -> str:
    f.seek(0)
    return f.read().decode("utf-8", "replace")


# -- COW or raw -> raw ---------------------------------------------------------------------------
def _to_raw(view: DeviceView, output: str, force: bool, chunk: int,
            progress: Progress | None) -> tuple[int, int]:
    """The device into a new sparse raw image; returns (runs copied, bytes written)."""
    refuse_output(output, force, tuple(p for p in (view.path, view.backing) if p))
    written = copied_runs = 0
    buf = memoryview(bytearray(chunk))
    with named_write_errors(output), new_file_beside(output, exclusive=False) as ofd:
        for run in view.runs():
            if run.hole:
                continue
            copied_runs += 1
            for offset in range(run.start, run.end, chunk):
                n = min(chunk, run.end - offset)
                view.read_run_into(run, buf[:n], offset)
                written += write_nonzero(ofd, buf[:n], offset)
                if progress:
                    progress(offset + n, view.size)
        os.ftruncate(ofd, view.size)
        if progress:
            progress(view.size, view.size)
    return copied_runs, written


# -- COW or raw -> qcow2 -------------------------------------------------------------------------
def _backing_name(view: DeviceView, output: str, name: str | None) -> str:
    """The backing name to record in the qcow2 header; one that is given must be the COW's
    backing file (same size and mtime, checked as moo checks), found where qemu will look:
    relative names are relative to the overlay's directory."""
    if name is None:
        return os.path.abspath(view.backing)
    where = name if os.path.isabs(name) else os.path.join(os.path.dirname(os.path.abspath(output)), name)
    check_backing(view.image, where)
    return name


def _to_qcow2(view: DeviceView, output: str, force: bool, backing_file: str | None,
              chunk: int, log: list[list[str]], progress: Progress | None
              ) -> tuple[str | None, int, int, int]:
    """A qcow2 overlay holding the COW file's marked runs (or a raw image's data runs)."""
    is_cow = view.kind == "cow"
    if backing_file is not None and not is_cow:
        raise UsageError("--backing-file: a raw image has no backing file to name",
                         errno=_errno.EINVAL)
    name = _backing_name(view, output, backing_file) if is_cow else None
    refuse_output(output, force, tuple(p for p in (view.path, view.backing) if p))
    top = [run for run in view.runs() if run.depth == 0 and (is_cow or not run.hole)]
    total = sum(run.length for run in top) or 1
    view.release_backing_lock()      # qemu-img/qemu-nbd open it next; see the method
    copied = zeroed = done = 0
    buf = memoryview(bytearray(chunk))
    with named_write_errors(output), new_file_beside(output, exclusive=False) as ofd:
        temp = _temp_path(ofd)
        create = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if name is not None:
            create += ["-b", name, "-F", "raw"]
        _qemu([*create, temp, str(view.size)], log)
        with _qemu_nbd(temp, log, read_only=False, fmt="qcow2") as client:
            if client.size < view.size:
                raise UbdError(f"qemu-nbd exports {client.size} bytes, the device has {view.size}",
                               errno=_errno.EIO)
            for run in top:
                for offset in range(run.start, run.end, chunk):
                    n = min(chunk, run.end - offset)
                    data = None
                    if not run.hole:
                        view.read_run_into(run, buf[:n], offset)
                        if np.frombuffer(buf[:n], dtype=np.uint8).any():
                            data = buf[:n]
                    if data is not None:
                        client.write(offset, data)
                        copied += n
                    elif is_cow:          # zeros that must shadow the backing file
                        client.write_zeroes(offset, n)
                        zeroed += n
                    done += n
                    if progress:
                        progress(done, total)
        if progress:
            progress(total, total)
    return name, len(top), copied, zeroed


# -- qcow2 -> COW / raw --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Overlay:
    path: str
    size: int
    backing: str                 # the raw backing file
    backing_size: int


def _open_overlay(path: str, backing: str | None, log: list[list[str]]) -> _Overlay:
    """The qcow2 overlay's size and raw backing file (its header's, or `backing`), checked."""
    info = json.loads(_qemu(["qemu-img", "info", "--output=json", "-f", "qcow2",
                             os.path.abspath(path)], log))
    recorded = info.get("full-backing-filename") or info.get("backing-filename")
    if backing is None:
        if not recorded:
            raise UbdError(f"'{shown(path)}' is a qcow2 image without a backing file: a UML COW "
                           "file needs one; 'ubdsim convert -O raw' makes it a raw image",
                           errno=_errno.EINVAL)
        fmt = info.get("backing-filename-format")
        if fmt not in (None, "raw"):
            raise UbdError(f"'{shown(path)}' has a {fmt} backing file ('{shown(recorded)}'): a UML "
                           "backing file is a raw image; flatten the chain first (qemu-img "
                           "convert -O raw of the backing file, then qemu-img rebase)",
                           errno=_errno.EINVAL)
        backing = recorded
    try:
        st = os.stat(backing)
    except FileNotFoundError:
        raise BackingMissing(f'backing file "{shown(backing)}" does not exist (use -b to name '
                             "where it is)") from None
    refuse_non_disk(st, backing, "backing file")
    if probe_kind(backing) != "raw":
        raise RefusedFile(f"backing file '{shown(backing)}' is not a raw image (it has a COW or "
                          "qcow2 header): a UML backing file is a raw image", errno=_errno.EINVAL)
    size, bsize = int(info["virtual-size"]), backing_size(os.fsencode(backing))
    if size not in (bsize, -(-bsize // SECTOR) * SECTOR):
        raise BackingError(f"'{shown(path)}' is {size} bytes but its backing file "
                           f"'{shown(backing)}' is {bsize}: a UML COW file covers exactly its "
                           "backing file", errno=_errno.EINVAL)
    return _Overlay(path=path, size=size, backing=backing, backing_size=bsize)


def _allocated(overlay: _Overlay, log: list[list[str]]) -> list[dict]:
    """The ranges the overlay itself allocates (qemu-img map of it with no backing file)."""
    entries = json.loads(_qemu(["qemu-img", "map", "--output=json",
                                _qcow2_spec(overlay.path, None)], log))
    return [e for e in entries if e["present"] and e["start"] < overlay.backing_size]


def _qcow2_to_cow(overlay: _Overlay, output: str, force: bool, chunk: int,
                  log: list[list[str]], progress: Progress | None) -> tuple[str, int, int, int]:
    refuse_output(output, force, (overlay.path, overlay.backing))
    ranges = _allocated(overlay, log)
    header = header_for_backing(overlay.backing)
    total = sum(e["length"] for e in ranges) or 1
    copied = zeroed = done = 0
    buf = memoryview(bytearray(chunk))
    with named_write_errors(output), new_file_beside(output, exclusive=False) as ofd:
        geometry = write_cow(ofd, header)
        ss, end = geometry.sectorsize, geometry.size
        with CowImage(output, os.dup(ofd), header, geometry, writable=True) as image, \
                _qemu_nbd(_qcow2_spec(overlay.path, None), log, read_only=True) as client:
            for entry in ranges:
                lo, hi = entry["start"], min(entry["start"] + entry["length"], end)
                bm.set_range(image.bitmap, lo // ss, -(-hi // ss) - lo // ss)
                if not entry["data"]:
                    zeroed += hi - lo          # a zero cluster: marked, left a hole
                else:
                    for offset in range(lo, hi, chunk):
                        n = min(chunk, hi - offset)
                        client.read(offset, buf[:n])
                        write_nonzero(ofd, buf[:n], geometry.sector_offset(0) + offset)
                        copied += n
                done += entry["length"]
                if progress:
                    progress(done, total)
            image.fsync()
        if progress:
            progress(total, total)
    return os.fsdecode(header.backing_path), len(ranges), copied, zeroed


def _qcow2_to_raw(overlay: _Overlay, output: str, force: bool, log: list[list[str]]) -> None:
    refuse_output(output, force, (overlay.path, overlay.backing))
    with named_write_errors(output), new_file_beside(output, exclusive=False) as ofd:
        _qemu(["qemu-img", "convert", "-q", "-O", "raw",
               _qcow2_spec(overlay.path, overlay.backing), _temp_path(ofd)], log)


# -- the operation ---------------------------------------------------------------------------------
def convert(source: str, output: str, output_format: str = "raw", *, backing: str | None = None,
            backing_file: str | None = None, force: bool = False, chunk_bytes: int = CHUNK_BYTES,
            progress: Progress | None = None) -> ConvertResult:
    """Convert `source` (COW file, raw image or qcow2 overlay) into `output` (see the module).

    `backing` is the source's actual backing file (COW: as moo -b; qcow2: instead of the
    overlay's recorded one); `backing_file` the name to record in a qcow2 output.
    """
    if output_format not in FORMATS:
        raise UsageError(f"unknown output format '{output_format}' (raw, qcow2 or cow)")
    started = time.monotonic()
    kind = probe_kind(source)
    log: list[list[str]] = []
    if backing_file is not None and output_format != "qcow2":
        raise UsageError("--backing-file names the backing file in a qcow2 output (-O qcow2) only")
    if kind == "qcow2":
        if output_format == "qcow2":
            raise UsageError(f"'{shown(source)}' is already qcow2: use qemu-img convert to "
                             "change qcow2 options")
        overlay = _open_overlay(source, backing, log)
        if output_format == "cow":
            name, ranges, copied, zeroed = _qcow2_to_cow(overlay, output, force, chunk_bytes,
                                                         log, progress)
            size = overlay.backing_size
        else:
            _qcow2_to_raw(overlay, output, force, log)
            # qemu-img convert wrote it: its allocation is the data it copied
            name, ranges, copied, zeroed, size = None, 0, os.stat(output).st_blocks * 512, 0, overlay.size
        return ConvertResult(source=source, source_format=kind, output=output,
                             output_format=output_format, backing=overlay.backing,
                             backing_name=name, size=size, ranges=ranges, bytes_copied=copied,
                             bytes_zeroed=zeroed, commands=log,
                             seconds=round(time.monotonic() - started, 6))
    if output_format == "cow":
        hint = ("it already is one (ubdsim rebase points it elsewhere)" if kind == "cow" else
                "'ubdsim mkcow COW IMAGE' makes a COW file over it")
        raise UsageError(f"'{shown(source)}' is a {'COW file' if kind == 'cow' else 'raw image'}: "
                         f"-O cow converts qcow2 overlays; {hint}")
    with open_device(source, backing) as view:
        if output_format == "raw":
            ranges, copied = _to_raw(view, output, force, chunk_bytes, progress)
            name, zeroed = None, 0
        else:
            name, ranges, copied, zeroed = _to_qcow2(view, output, force, backing_file,
                                                     chunk_bytes, log, progress)
        return ConvertResult(source=source, source_format=view.kind, output=output,
                             output_format=output_format, backing=view.backing,
                             backing_name=name, size=view.size, ranges=ranges,
                             bytes_copied=copied, bytes_zeroed=zeroed, commands=log,
                             seconds=round(time.monotonic() - started, 6))


__all__ = ["ConvertResult", "FORMATS", "convert"]
