"""Guest for test_native_wait.py: every call of the syscall table's FD_FIRST set on
descriptors that are no device (a file, a pipe, /dev/null), printing what each returned,
then reads of /dev/ubda through a dup2'ed descriptor 0 and a high dup. Run natively (the
host's answers) and under ubdsim with the C loop and with the Python loop: the non-device
half must print the same; the device half prints digests of the unit's bytes."""
import errno
import fcntl
import hashlib
import os
import sys
import termios


def show(name, call):
    try:
        got = call()
    except OSError as err:
        got = errno.errorcode[err.errno]
    print(name, got)


os.chdir(sys.argv[1])
fd = os.open("plain.dat", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
show("write", lambda: os.write(fd, b"0123456789" * 100))
show("pwrite64", lambda: os.pwrite(fd, b"abc", 10))
show("writev", lambda: os.writev(fd, [b"x" * 5, b"y" * 7]))
show("pwritev", lambda: os.pwritev(fd, [b"p", b"q"], 20))
show("pwritev2", lambda: os.pwritev(fd, [b"r"], 30, 0))
show("lseek", lambda: os.lseek(fd, 0, os.SEEK_SET))
show("read", lambda: os.read(fd, 40))
show("pread64", lambda: os.pread(fd, 10, 5))
buf = bytearray(8)
show("readv", lambda: (os.readv(fd, [buf]), bytes(buf)))
show("preadv", lambda: (os.preadv(fd, [buf], 3), bytes(buf)))
show("preadv2", lambda: (os.preadv(fd, [buf], 6, 0), bytes(buf)))
show("fstat", lambda: os.fstat(fd).st_size)
show("fsync", lambda: os.fsync(fd))
show("fdatasync", lambda: os.fdatasync(fd))
show("sync_file_range", lambda: os.sync_file_range(fd, 0, 0, os.SYNC_FILE_RANGE_WRITE)
     if hasattr(os, "sync_file_range") else None)
show("fadvise64", lambda: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL))
show("fallocate", lambda: os.posix_fallocate(fd, 0, 8192))
show("fstat after fallocate", lambda: os.fstat(fd).st_size)
show("ftruncate", lambda: os.ftruncate(fd, 100))
show("fcntl F_GETFL", lambda: fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE)
show("ioctl on a file", lambda: fcntl.ioctl(fd, termios.TCGETS, bytes(64)))
r, w = os.pipe()
show("write pipe", lambda: os.write(w, b"hello"))
show("ioctl FIONREAD", lambda: int.from_bytes(fcntl.ioctl(r, termios.FIONREAD, bytes(4)),
                                              "little"))
show("read pipe", lambda: os.read(r, 10))
show("lseek pipe", lambda: os.lseek(r, 0, os.SEEK_SET))
show("write closed", lambda: os.write(999, b"x"))
show("read -1", lambda: os.read(-1, 1))
null = os.open("/dev/null", os.O_WRONLY)
for _ in range(2000):
    os.write(null, b"z")
print("2000 writes to /dev/null")
if len(sys.argv) > 2:                    # under ubdsim: the device half
    dev = os.open("/dev/ubda", os.O_RDONLY)
    os.dup2(dev, 0)
    print("fd 0", hashlib.sha256(os.read(0, 65536)).hexdigest()[:16],
          os.lseek(0, 0, os.SEEK_CUR))
    high = fcntl.fcntl(dev, fcntl.F_DUPFD, 700)
    print("fd", high, hashlib.sha256(os.pread(high, 4096, 8192)).hexdigest()[:16],
          os.fstat(high).st_size, os.lseek(high, 0, os.SEEK_END))
