"""Guest for test_fast_path.py: run the O_DIRECT requests of ops.json on /dev/ubda (and the
buffered preads, "bread", on a second descriptor opened without O_DIRECT) and print what each
returned (count or errno name), a digest of every buffer read, and the file position after
each read()/write(). "rburst"/"wburst" are BURST read()/write() calls in a row from `pos`
with no other call between them (the C loop's lane serves such runs). Whether a planted
descriptor was seen goes to planted.txt (not compared: it is the fast path's footprint)."""
import ctypes
import errno
import hashlib
import json
import mmap
import os

ops = json.load(open("ops.json"))
fd = os.open("/dev/ubda", os.O_RDWR | os.O_DIRECT)
buffered = os.open("/dev/ubda", os.O_RDONLY)
buf = mmap.mmap(-1, 1 << 20)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None, use_errno=True)
for name in ("read", "write", "pread64", "pwrite64"):
    getattr(libc, name).restype = ctypes.c_ssize_t
seen = set()
BURST = 6
for i, (kind, pos, length, skew, seed) in enumerate(ops):
    view = memoryview(buf)[skew:skew + length]
    if kind in ("write", "pwrite", "wburst"):
        pattern = hashlib.sha256(f"{seed}".encode()).digest() * (length // 32 + 1)
        view[:] = pattern[:length]
    addr, n = ctypes.c_void_p(base + skew), ctypes.c_size_t(length)
    if kind in ("read", "write", "rburst", "wburst"):
        try:
            os.lseek(fd, pos, os.SEEK_SET)
        except OSError as err:             # past the end: EINVAL (fixed_size_llseek())
            print(i, kind, pos, length, skew, "lseek", errno.errorcode[err.errno])
            del view
            continue
    if kind in ("rburst", "wburst"):
        call, results = libc.read if kind == "rburst" else libc.write, []
        for _ in range(BURST):
            got = call(fd, addr, n)
            results.append(str(got) if got >= 0 else errno.errorcode[ctypes.get_errno()])
            if kind == "rburst":
                results[-1] += ":" + hashlib.sha256(view).hexdigest()[:16]
        print(i, kind, pos, length, skew, ",".join(results),
              f"pos={os.lseek(fd, 0, os.SEEK_CUR)}")
        del view
        continue
    if kind in ("read", "write"):
        got = getattr(libc, kind)(fd, addr, n)
    elif kind == "bread":
        got = libc.pread64(buffered, addr, n, ctypes.c_long(pos))
    else:
        got = getattr(libc, kind + "64")(fd, addr, n, ctypes.c_long(pos))
    out = str(got) if got >= 0 else errno.errorcode[ctypes.get_errno()]
    if kind in ("read", "pread", "bread"):
        out += " " + hashlib.sha256(view).hexdigest()[:16]
    if kind in ("read", "write"):
        out += f" pos={os.lseek(fd, 0, os.SEEK_CUR)}"
    print(i, kind, pos, length, skew, out)
    seen |= {n for n in os.listdir("/proc/self/fd") if int(n) > 1000}
    del view
with open("planted.txt", "w") as f:
    f.write(" ".join(sorted(seen)))
