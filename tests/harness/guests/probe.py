"""Guest program: ask /dev/ubda and /dev/ubdb everything a block device answers and print
one line per answer, so the kernel's and ubdsim's transcripts can be diffed."""
import ctypes
import errno
import fcntl
import mmap
import os
import socket
import stat
import struct
import subprocess
import sys


def show(name, fn):
    try:
        value = fn()
    except OSError as err:
        value = "errno " + errno.errorcode.get(err.errno, str(err.errno))
    print(f"{name}: {value}")


_libc = ctypes.CDLL(None, use_errno=True)


def fallocate(fd, mode, offset, length):
    if _libc.fallocate(fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return 0


def ioctl_out(fd, cmd, size=8):
    return fcntl.ioctl(fd, cmd, bytes(size)).hex()


A, B = "/dev/ubda", "/dev/ubdb"
st = os.stat(A)
print("stat:", stat.S_ISBLK(st.st_mode), oct(st.st_mode & 0o7777), os.major(st.st_rdev),
      os.minor(st.st_rdev), st.st_size, st.st_uid, st.st_gid, st.st_nlink, st.st_blocks)
st = os.stat(B)
print("stat b:", stat.S_ISBLK(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))
show("stat ubdc", lambda: os.stat("/dev/ubdc"))
show("open ubdc", lambda: os.open("/dev/ubdc", os.O_RDONLY))
show("access rw", lambda: os.access(A, os.R_OK | os.W_OK))
show("access x", lambda: os.access(A, os.X_OK))
show("open b rdwr", lambda: os.open(B, os.O_RDWR))
show("open b wronly", lambda: os.open(B, os.O_WRONLY))
show("open a directory", lambda: os.open(A, os.O_RDONLY | os.O_DIRECTORY))
show("open a creat excl", lambda: os.open(A, os.O_RDWR | os.O_CREAT | os.O_EXCL))

fd = os.open(A, os.O_RDWR)
show("fstat", lambda: (stat.S_ISBLK(os.fstat(fd).st_mode), os.major(os.fstat(fd).st_rdev)))
show("getfl", lambda: oct(fcntl.fcntl(fd, fcntl.F_GETFL) & ~0o100000))
for name, cmd, size in [("BLKGETSIZE64", 0x80081272, 8), ("BLKGETSIZE", 0x1260, 8),
                        ("BLKSSZGET", 0x1268, 4), ("BLKPBSZGET", 0x127B, 4),
                        ("BLKBSZGET", 0x80081270, 4), ("BLKIOMIN", 0x1278, 4),
                        ("BLKIOOPT", 0x1279, 4), ("BLKALIGNOFF", 0x127A, 4),
                        ("BLKROGET", 0x125E, 4), ("BLKDISCARDZEROES", 0x127C, 4),
                        ("BLKGETZONESZ", 0x80041284, 4), ("BLKGETNRZONES", 0x80041285, 4),
                        ("BLKROTATIONAL", 0x127E, 2), ("BLKSECTGET", 0x1267, 2),
                        ("BLKRAGET", 0x1263, 8), ("HDIO_GETGEO", 0x0301, 16),
                        ("TCGETS", 0x5401, 60), ("FIONREAD", 0x541B, 4),
                        ("CDROM_GET_CAPABILITY", 0x5331, 4), ("FDGETDRVTYP", 0x8010020F, 16),
                        ("BLKREPORTZONE", 0xC0101282, 16)]:
    show(name, lambda: ioctl_out(fd, cmd, size))
show("BLKFLSBUF", lambda: fcntl.ioctl(fd, 0x1261, 0))
show("BLKRRPART", lambda: fcntl.ioctl(fd, 0x125F, 0))

size = struct.unpack("Q", fcntl.ioctl(fd, 0x80081272, bytes(8)))[0]
show("seek end", lambda: os.lseek(fd, 0, os.SEEK_END))
show("seek end-512", lambda: os.lseek(fd, -512, os.SEEK_END))
show("seek past", lambda: os.lseek(fd, size + 512, os.SEEK_SET))
show("seek negative", lambda: os.lseek(fd, -1, os.SEEK_SET))
show("seek data 4096", lambda: os.lseek(fd, 4096, os.SEEK_DATA))
show("seek hole 4096", lambda: os.lseek(fd, 4096, os.SEEK_HOLE))
show("seek data end", lambda: os.lseek(fd, size, os.SEEK_DATA))
show("seek bad whence", lambda: os.lseek(fd, 0, 9))
show("read at end", lambda: len(os.pread(fd, 4096, size)))
show("read across end", lambda: len(os.pread(fd, 4096, size - 1000)))
show("write at end", lambda: os.pwrite(fd, b"x" * 512, size))
show("write across end", lambda: os.pwrite(fd, b"y" * 4096, size - 1000))
show("write empty at end", lambda: os.pwrite(fd, b"", size))
show("pwrite odd", lambda: os.pwrite(fd, b"odd bytes", 12345))
show("pread odd", lambda: os.pread(fd, 9, 12345))
show("writev", lambda: (os.lseek(fd, 70000, 0), os.writev(fd, [b"ab" * 100, b"cd" * 300]))[1])
show("readv", lambda: (lambda bufs: (os.lseek(fd, 70198, 0), os.readv(fd, bufs), bytes(bufs[0]), bytes(bufs[1])))([bytearray(3), bytearray(5)]))
show("pwritev", lambda: os.pwritev(fd, [b"P" * 512, b"Q" * 512], 1 << 20))
show("preadv", lambda: (lambda bufs: (os.preadv(fd, bufs, (1 << 20) + 500), bytes(bufs[0]), bytes(bufs[1])))([bytearray(10), bytearray(10)]))
show("position", lambda: os.lseek(fd, 0, os.SEEK_CUR))
dup = os.dup(fd)
show("dup shares offset", lambda: (os.lseek(fd, 5120, 0), os.lseek(dup, 0, os.SEEK_CUR))[1])
show("fsync", lambda: os.fsync(fd))
show("fdatasync", lambda: os.fdatasync(fd))
show("fadvise", lambda: os.posix_fadvise(fd, 0, 4096, os.POSIX_FADV_DONTNEED))
show("fadvise bad", lambda: os.posix_fadvise(fd, 0, 4096, 77))
show("ftruncate", lambda: os.ftruncate(fd, 4096))
show("fallocate zero", lambda: fallocate(fd, 0x10, 8192, 4096))
show("fallocate punch", lambda: fallocate(fd, 0x03, 16384, 4096))
show("fallocate punch no keep", lambda: fallocate(fd, 0x02, 16384, 4096))
show("fallocate default", lambda: fallocate(fd, 0, 0, 4096))
show("fallocate odd", lambda: fallocate(fd, 0x10, 100, 4096))
show("fallocate past", lambda: fallocate(fd, 0x10, size, 4096))
show("fallocate keep past", lambda: fallocate(fd, 0x11, size - 4096, 8192))
show("BLKZEROOUT", lambda: fcntl.ioctl(fd, 0x127F, struct.pack("QQ", 24576, 4096)))
show("BLKZEROOUT odd", lambda: fcntl.ioctl(fd, 0x127F, struct.pack("QQ", 100, 4096)))
show("BLKDISCARD", lambda: fcntl.ioctl(fd, 0x1277, struct.pack("QQ", 32768, 4096)))
show("BLKDISCARD past", lambda: fcntl.ioctl(fd, 0x1277, struct.pack("QQ", size, 4096)))
show("read zeroed", lambda: os.pread(fd, 8192, 8192).count(0))
# A soft block size set here lasts until the last descriptor closes (then the next
# open re-initialises it: the O_DIRECT part below writes through fresh 4 KiB blocks).
show("BLKBSZSET 1024", lambda: fcntl.ioctl(fd, 0x40081271, struct.pack("i", 1024)))
show("BLKBSZSET 3000", lambda: fcntl.ioctl(fd, 0x40081271, struct.pack("i", 3000)))
show("BLKBSZGET after", lambda: ioctl_out(fd, 0x80081270, 4))
os.close(dup)
os.close(fd)

fd = os.open(A, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 65536)
show("direct getfl", lambda: oct(fcntl.fcntl(fd, fcntl.F_GETFL) & ~0o100000))
show("direct read aligned", lambda: os.preadv(fd, [buf], 4096))
show("direct read odd offset", lambda: os.preadv(fd, [buf], 100))
show("direct read odd length", lambda: os.preadv(fd, [memoryview(buf)[:1000]], 4096))
show("direct read odd buffer", lambda: os.preadv(fd, [memoryview(buf)[8:520]], 4096))
show("direct read at end", lambda: os.preadv(fd, [buf], size))
show("direct read odd at end", lambda: os.preadv(fd, [memoryview(buf)[:100]], size))
show("direct write odd", lambda: os.pwritev(fd, [memoryview(buf)[:700]], 4096))
buf[:512] = b"D" * 512
show("direct write", lambda: os.pwritev(fd, [memoryview(buf)[:512]], 512 * 41))
show("setfl clear direct", lambda: fcntl.fcntl(fd, fcntl.F_SETFL, 0))
show("getfl after", lambda: oct(fcntl.fcntl(fd, fcntl.F_GETFL) & ~0o100000))
show("odd write after", lambda: os.pwrite(fd, b"buffered now", 512 * 43 + 7))
os.close(fd)

fd = os.open(B, os.O_RDONLY)
show("b write", lambda: os.write(fd, b"x"))
show("b BLKROGET", lambda: ioctl_out(fd, 0x125E, 4))
show("b BLKSECTGET", lambda: ioctl_out(fd, 0x1267, 2))
show("b BLKDISCARD", lambda: fcntl.ioctl(fd, 0x1277, struct.pack("QQ", 0, 4096)))
show("b read", lambda: os.read(fd, 24))
os.close(fd)
fd = os.open(B, os.O_RDWR)
show("b rdwr write", lambda: os.write(fd, b"x"))
show("b rdwr pwrite", lambda: os.pwrite(fd, b"x" * 512, 0))
show("b rdwr BLKZEROOUT", lambda: fcntl.ioctl(fd, 0x127F, struct.pack("QQ", 0, 4096)))
show("b rdwr fsync", lambda: os.fsync(fd))
show("b size", lambda: os.lseek(fd, 0, os.SEEK_END))
os.close(fd)

e1 = os.open(A, os.O_RDONLY | os.O_EXCL)
show("excl twice", lambda: os.open(A, os.O_RDONLY | os.O_EXCL))
show("shared while excl", lambda: os.close(os.open(A, os.O_RDONLY)))
os.close(e1)
show("excl after close", lambda: os.close(os.open(A, os.O_RDONLY | os.O_EXCL)))

# mmap: a private mapping and a read-only shared one see the device's bytes.
fd = os.open(A, os.O_RDWR)
show("mmap private", lambda: mmap.mmap(fd, 8192, mmap.MAP_PRIVATE, offset=4096)[4096:4120])
show("mmap shared ro", lambda: mmap.mmap(fd, 4096, prot=mmap.PROT_READ, offset=1 << 20)[:12])
show("mmap odd offset", lambda: mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, offset=512))
os.close(fd)

# Descriptors travel like real ones: close-on-exec, inheritance over exec, SCM_RIGHTS.
fd = os.open(A, os.O_RDONLY | os.O_CLOEXEC)
fd2 = os.open(A, os.O_RDONLY)
show("cloexec flag", lambda: fcntl.fcntl(fd, fcntl.F_GETFD))
show("no cloexec flag", lambda: fcntl.fcntl(fd2, fcntl.F_GETFD))
left, right = socket.socketpair()
socket.send_fds(left, [b"x"], [fd])
passed = socket.recv_fds(right, 1, 1)[1][0]
show("passed fd read", lambda: os.pread(passed, 24, 512 * 5))
show("passed fd is blk", lambda: stat.S_ISBLK(os.fstat(passed).st_mode))
sys.stdout.flush()
show("exec inherits", lambda: subprocess.run(
    ["sh", "-c", f"dd bs=512 skip=6 count=1 2>/dev/null <&{fd2} | head -c 24"],
    pass_fds=(fd2,), capture_output=True).stdout)
show("exec closes cloexec", lambda: subprocess.run(
    ["sh", "-c", f"dd bs=512 count=1 <&{fd} 2>/dev/null"], pass_fds=(), close_fds=False,
    capture_output=True).returncode)
sys.stdout.flush()
