"""The guest side of a fuzz program: performs its operations on /dev/ubdX, one line each.

Why a Python script and not sh + dd: the fuzzer needs system calls dd cannot make (pread64
at any byte offset, readv/writev with chosen segments, lseek with every whence, fadvise,
fallocate, block ioctls) and a result for each one, errno included. The same file runs
unchanged under linux.uml (the host's / is the guest's root through hostfs, so
/usr/bin/python3 is there) and under `ubdsim run --kernel 6.1`, started by one sh line
(kernel_ref/fuzz/step.py), as `/usr/bin/python3 -I -S -B guest_runner.py PROGRAM.json`.

Only the standard library, no kernel_ref import: it runs isolated (-I -S) in the guest. Each
call goes through ctypes to the libc wrapper of exactly that system call (pread64, not
preadv), from an anonymous mmap arena (page-aligned: O_DIRECT wants 512-byte-aligned
buffers, block/fops.c blkdev_dio_unaligned() [6.1]); `misalign` shifts the buffer on purpose.

Output: `<step>.<k> <op> <args> = <result>`, where result is `rc=<value>` or `err=<ENAME>`,
and for reads `n=<bytes> sha=<first 16 hex of sha256>`; the bytes each read returned are kept
in `.kref/fuzz-read-<boot>-<step>-<k>.bin` (for explaining a difference; never compared as
files). The exit status is 0 unless the runner itself broke (3).
"""
import ctypes
import errno
import hashlib
import json
import mmap
import os
import struct
import sys

PAGE = 4096
SEEK_NAMES = {"SET": 0, "CUR": 1, "END": 2, "DATA": 3, "HOLE": 4}
OPEN_FLAGS = {"O_RDONLY": os.O_RDONLY, "O_WRONLY": os.O_WRONLY, "O_RDWR": os.O_RDWR,
              "O_DIRECT": os.O_DIRECT, "O_SYNC": os.O_SYNC, "O_DSYNC": os.O_DSYNC,
              "O_EXCL": os.O_EXCL, "O_NONBLOCK": os.O_NONBLOCK}
# include/uapi/linux/fs.h, hdreg.h: request number, argument kind, value format
IOCTLS = {
    "BLKROSET": (0x125D, "intptr", "i"), "BLKROGET": (0x125E, "get", "i"),
    "BLKRRPART": (0x125F, "none", ""), "BLKGETSIZE": (0x1260, "get", "Q"),
    "BLKFLSBUF": (0x1261, "none", ""), "BLKRASET": (0x1262, "value", ""),
    "BLKRAGET": (0x1263, "get", "q"), "BLKFRASET": (0x1264, "value", ""),
    "BLKFRAGET": (0x1265, "get", "q"), "BLKSECTGET": (0x1267, "get", "H"),
    "BLKSSZGET": (0x1268, "get", "i"), "BLKBSZGET": (0x80081270, "get", "i"),
    "BLKBSZSET": (0x40081271, "intptr", "i"), "BLKGETSIZE64": (0x80081272, "get", "Q"),
    "BLKDISCARD": (0x1277, "range", ""), "BLKIOMIN": (0x1278, "get", "I"),
    "BLKIOOPT": (0x1279, "get", "I"), "BLKALIGNOFF": (0x127A, "get", "i"),
    "BLKPBSZGET": (0x127B, "get", "I"), "BLKDISCARDZEROES": (0x127C, "get", "I"),
    "BLKSECDISCARD": (0x127D, "range", ""), "BLKROTATIONAL": (0x127E, "get", "H"),
    "BLKZEROOUT": (0x127F, "range", ""), "BLKGETZONESZ": (0x80041284, "get", "I"),
    "BLKGETNRZONES": (0x80041285, "get", "I"), "HDIO_GETGEO": (0x0301, "geo", ""),
    "BOGUS": (0x4D4F, "none", ""),          # no such request: ubd_ioctl()'s default
}

libc = ctypes.CDLL(None, use_errno=True)
_ssize, _off, _size, _vp = ctypes.c_ssize_t, ctypes.c_int64, ctypes.c_size_t, ctypes.c_void_p
_int = ctypes.c_int


def _proto(name, restype, *argtypes):
    fn = getattr(libc, name)
    fn.restype, fn.argtypes = restype, list(argtypes)
    return fn


class Iovec(ctypes.Structure):
    _fields_ = [("base", _vp), ("len", _size)]


pread64 = _proto("pread64", _ssize, _int, _vp, _size, _off)
pwrite64 = _proto("pwrite64", _ssize, _int, _vp, _size, _off)
c_read = _proto("read", _ssize, _int, _vp, _size)
c_write = _proto("write", _ssize, _int, _vp, _size)
c_readv = _proto("readv", _ssize, _int, ctypes.POINTER(Iovec), _int)
c_writev = _proto("writev", _ssize, _int, ctypes.POINTER(Iovec), _int)
c_preadv = _proto("preadv64", _ssize, _int, ctypes.POINTER(Iovec), _int, _off)
c_pwritev = _proto("pwritev64", _ssize, _int, ctypes.POINTER(Iovec), _int, _off)
c_lseek = _proto("lseek64", _off, _int, _off, _int)
c_fsync = _proto("fsync", _int, _int)
c_fdatasync = _proto("fdatasync", _int, _int)
c_sync = _proto("sync", None)
c_fadvise = _proto("posix_fadvise64", _int, _int, _off, _off, _int)
c_fallocate = _proto("fallocate64", _int, _int, _int, _off, _off)
c_ioctl = _proto("ioctl", _int, _int, ctypes.c_ulong, _vp)


def pattern(tag, pos, length):
    """Bytes that name who wrote them and where: 32-byte lines `<tag> <device offset>`."""
    out = bytearray()
    start = pos - pos % 32
    for line_at in range(start, pos + length, 32):
        out += f"{tag} {line_at:011d}".ljust(31).encode()[:31] + b"\n"
    return bytes(out[pos - start:pos - start + length])


def _err(code):
    return "err=" + errno.errorcode.get(code, str(code))


class Runner:
    def __init__(self, program, scratch):
        self.boot, self.step = program["boot"], program["step"]
        self.scratch = scratch
        need = max([_extent(op) for op in program["ops"]] + [PAGE])
        self.arena_len = -(-(need + PAGE) // PAGE) * PAGE
        self.arena = mmap.mmap(-1, self.arena_len)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.arena))
        self.slots = {}                          # slot -> (fd, path, flags)

    # -- helpers -----------------------------------------------------------------------
    def fd(self, op):
        entry = self.slots.get(op["slot"])
        return None if entry is None else entry[0]

    def layout(self, lengths, misalign):
        """Where each segment sits in the arena: 512-aligned starts, plus `misalign`."""
        spans, at = [], 0
        for length in lengths:
            spans.append((at + misalign, length))
            at = -(-(at + misalign + length) // 512) * 512
        return spans

    def keep(self, k, data):
        path = os.path.join(self.scratch, f"fuzz-read-{self.boot}-{self.step}-{k}.bin")
        with open(path, "wb") as f:
            f.write(data)

    def gathered(self, spans, n):
        out = bytearray()
        for at, length in spans:
            take = min(length, n - len(out))
            if take <= 0:
                break
            out += self.arena[at:at + take]
        return bytes(out)

    def fill(self, spans, tag, pos):
        for at, length in spans:
            if pos is not None:
                self.arena[at:at + length] = pattern(tag, pos, length)
                pos += length
            else:
                self.arena[at:at + length] = pattern(tag, at, length)

    def result(self, rc, spans=None, k=None, reading=False):
        if rc < 0:
            return _err(ctypes.get_errno())
        if reading:
            data = self.gathered(spans, rc)
            self.keep(k, data)
            return f"n={rc} sha={hashlib.sha256(data).hexdigest()[:16]}"
        return f"rc={rc}"

    # -- operations --------------------------------------------------------------------
    def do(self, k, op):
        name = op["op"]
        if name in ("open", "reopen", "close", "sync"):
            return getattr(self, "op_" + name)(op)
        fd = self.fd(op)
        if fd is None:
            return "no-fd"
        ctypes.set_errno(0)
        return getattr(self, "op_" + name)(k, op, fd)

    def op_open(self, op):
        if op["slot"] in self.slots:
            return "slot-busy"
        flags = 0
        for flag in op["flags"]:
            flags |= OPEN_FLAGS[flag]
        try:
            fd = os.open(op["path"], flags)
        except OSError as err:
            return _err(err.errno)
        self.slots[op["slot"]] = (fd, op["path"], flags)
        return "rc=0"

    def op_close(self, op):
        entry = self.slots.pop(op["slot"], None)
        if entry is None:
            return "no-fd"
        try:
            os.close(entry[0])
        except OSError as err:
            return _err(err.errno)
        return "rc=0"

    def op_reopen(self, op):
        """close, then open the same path with the same flags (the last close of a disk
        runs ubd_release() and blkdev_put()'s sync; the open after it ubd_open() again)."""
        entry = self.slots.pop(op["slot"], None)
        if entry is None:
            return "no-fd"
        os.close(entry[0])
        try:
            fd = os.open(entry[1], entry[2])
        except OSError as err:
            return _err(err.errno)
        self.slots[op["slot"]] = (fd, entry[1], entry[2])
        return "rc=0"

    def op_sync(self, op):
        c_sync()
        return "rc=0"

    def op_pread(self, k, op, fd):
        spans = self.layout([op["len"]], op.get("misalign", 0))
        self.arena[:] = b"\xa5" * self.arena_len
        rc = pread64(fd, self.base + spans[0][0], op["len"], op["off"])
        return self.result(rc, spans, k, reading=True)

    def op_read(self, k, op, fd):
        spans = self.layout([op["len"]], op.get("misalign", 0))
        self.arena[:] = b"\xa5" * self.arena_len
        rc = c_read(fd, self.base + spans[0][0], op["len"])
        return self.result(rc, spans, k, reading=True)

    def op_pwrite(self, k, op, fd):
        spans = self.layout([op["len"]], op.get("misalign", 0))
        self.fill(spans, op["tag"], op["off"])
        return self.result(pwrite64(fd, self.base + spans[0][0], op["len"], op["off"]))

    def op_write(self, k, op, fd):
        spans = self.layout([op["len"]], op.get("misalign", 0))
        self.fill(spans, op["tag"], None)
        return self.result(c_write(fd, self.base + spans[0][0], op["len"]))

    def _iov(self, spans):
        iov = (Iovec * max(1, len(spans)))()
        for i, (at, length) in enumerate(spans):
            iov[i].base, iov[i].len = self.base + at, length
        return iov

    def op_readv(self, k, op, fd):
        spans = self.layout(op["segs"], op.get("misalign", 0))
        self.arena[:] = b"\xa5" * self.arena_len
        iov = self._iov(spans)
        if "off" in op:
            rc = c_preadv(fd, iov, len(spans), op["off"])
        else:
            rc = c_readv(fd, iov, len(spans))
        return self.result(rc, spans, k, reading=True)

    def op_writev(self, k, op, fd):
        spans = self.layout(op["segs"], op.get("misalign", 0))
        self.fill(spans, op["tag"], op.get("off"))
        iov = self._iov(spans)
        if "off" in op:
            rc = c_pwritev(fd, iov, len(spans), op["off"])
        else:
            rc = c_writev(fd, iov, len(spans))
        return self.result(rc)

    def op_lseek(self, k, op, fd):
        return self.result(c_lseek(fd, op["off"], SEEK_NAMES[op["whence"]]))

    def op_fsync(self, k, op, fd):
        return self.result(c_fsync(fd))

    def op_fdatasync(self, k, op, fd):
        return self.result(c_fdatasync(fd))

    def op_fadvise(self, k, op, fd):
        code = c_fadvise(fd, op["off"], op["len"], op["advice"])   # returns the error itself
        return "rc=0" if code == 0 else _err(code)

    def op_fallocate(self, k, op, fd):
        return self.result(c_fallocate(fd, op["mode"], op["off"], op["len"]))

    def op_ioctl(self, k, op, fd):
        request, kind, fmt = IOCTLS[op["name"]]
        if kind == "none":
            return self.result(c_ioctl(fd, request, None))
        if kind == "value":
            return self.result(c_ioctl(fd, request, op["arg"]))
        buf = ctypes.create_string_buffer(16)
        if kind == "intptr":
            struct.pack_into("<i", buf, 0, op["arg"])
        elif kind == "range":
            struct.pack_into("<QQ", buf, 0, op["off"] & (2**64 - 1), op["len"] & (2**64 - 1))
        rc = c_ioctl(fd, request, ctypes.cast(buf, _vp))
        if rc < 0 or kind not in ("get", "geo"):
            return self.result(rc)
        if kind == "geo":
            heads, sectors, cylinders, start = struct.unpack_from("<BBHxxxxQ", buf.raw)
            return f"rc={rc} geo={heads}/{sectors}/{cylinders}/{start}"
        return f"rc={rc} value={struct.unpack_from('<' + fmt, buf.raw)[0]}"


def _extent(op):
    """The arena bytes an operation may touch."""
    lengths = op.get("segs") or [op.get("len", 0) if op["op"] in
                                 ("pread", "pwrite", "read", "write") else 0]
    return sum(-(-(n + 1024) // 512) * 512 for n in lengths) + op.get("misalign", 0)


def describe(op):
    """The arguments part of an operation's line."""
    keys = ("slot", "path", "flags", "off", "len", "segs", "whence", "advice", "mode", "name",
            "arg", "misalign")
    parts = []
    for key in keys:
        if key in op and not (key == "misalign" and not op[key]):
            value = op[key]
            if isinstance(value, list):
                value = ",".join(str(v) for v in value) or "-"
            parts.append(f"{key}={value}")
    return " ".join(parts)


def main(argv):
    with open(argv[1]) as f:
        program = json.load(f)
    runner = Runner(program, os.path.dirname(os.path.abspath(argv[1])))
    broken = 0
    for k, op in enumerate(program["ops"], 1):
        try:
            result = runner.do(k, op)
        except Exception as exc:                  # a runner bug: say so on this op's line
            result, broken = f"EXC {type(exc).__name__}: {exc}", 3
        print(f"{runner.step}.{k} {op['op']} {describe(op)} = {result}", flush=True)
    return broken


if __name__ == "__main__":
    sys.exit(main(sys.argv))
