"""Guest program: when do buffered writes reach the host file, and what do partly up-to-date
pages read? Run under linux.uml and under `ubdsim run`; every line must be the same.

/dev/ubda is a COW unit (a.cow over a.img) whose size is not a multiple of 1024, so its soft
block size is 512. The host's view of a.cow is read through the guest's root (hostfs under
linux.uml, the host itself under ubdsim)."""
import ctypes
import hashlib
import os

libc = ctypes.CDLL(None, use_errno=True)
SYNC_FILE_RANGE_WRITE = 2
BLKBSZGET = 0x80081270


def on_host(pattern: bytes) -> bool:
    with open("a.cow", "rb") as f:
        return pattern in f.read()


def stamp(text: str, size: int) -> bytes:
    return text.encode().ljust(size, b"#")


fd = os.open("/dev/ubda", os.O_RDWR)
import fcntl, struct   # noqa: E401,E402
print("block size", struct.unpack("<i", fcntl.ioctl(fd, BLKBSZGET, b"\0" * 8)[:4])[0])

one = stamp("write-back one", 512)
os.pwrite(fd, one, 5 * 4096 + 3 * 512)           # one block of page 5
print("written, on host:", on_host(one))
print("syncfs", libc.syncfs(fd), "on host:", on_host(one))
os.fsync(fd)
print("fsync, on host:", on_host(one))

two = stamp("write-back two", 1024)
os.pwrite(fd, two, 9 * 4096)
print("written, on host:", on_host(two))
print("sync_file_range", libc.sync_file_range(fd, ctypes.c_longlong(9 * 4096),
                                              ctypes.c_longlong(1024), SYNC_FILE_RANGE_WRITE),
      "on host:", on_host(two))

# Page 5 is cached with one block up to date; pages 4, 6, 7 are not cached. The read fetches
# page 5's other blocks one by one and reads around it (6.1's do_io() drift would shift
# pages 6-7 if page 5, which mixes COW and backing sectors, were read with them).
print("read 4-7", hashlib.sha256(os.pread(fd, 16384, 4 * 4096)).hexdigest()[:16])
print("read 5", hashlib.sha256(os.pread(fd, 4096, 5 * 4096)).hexdigest()[:16])

three = stamp("write-back three", 512)
os.pwrite(fd, three, 20 * 4096 + 512)
os.close(fd)                                      # the last close writes back
fd = os.open("/dev/ubda", os.O_RDONLY)
print("closed and reopened, on host:", on_host(three))
os.close(fd)

sync = os.open("/dev/ubda", os.O_RDWR | os.O_SYNC)
four = stamp("write-back four", 512)
os.pwrite(sync, four, 30 * 4096)
print("O_SYNC write, on host:", on_host(four))
five = stamp("write-back five", 512)
os.write(os.open("/dev/ubda", os.O_WRONLY), five)
os.sync()
print("sync, on host:", on_host(five))
