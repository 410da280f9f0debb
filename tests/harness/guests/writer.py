"""Guest program: write self-identifying sectors to /dev/ubda forever (until killed).

Every sector written holds the same bytes whenever it is written (its stamp), so after a
crash at any moment, a sector the COW bitmap marks must hold exactly its stamp."""
import mmap
import os
import sys

SECTOR = 512
direct = sys.argv[1:] == ["direct"]
fd = os.open("/dev/ubda", os.O_RDWR | (os.O_DIRECT if direct else 0))
size = os.lseek(fd, 0, os.SEEK_END)
chunk = 64 * 1024


def stamp(sector: int) -> bytes:
    return f"stamp {sector:010d} ".encode().ljust(SECTOR, b"#")


buf = mmap.mmap(-1, chunk)      # page-aligned, as O_DIRECT needs
pos, rounds = 0, 0
while True:
    first = pos // SECTOR
    buf[:] = b"".join(stamp(first + i) for i in range(chunk // SECTOR))
    os.pwritev(fd, [buf], pos)
    pos = (pos + chunk) % size
    rounds += 1
    if rounds == 20:
        print(os.getpid(), flush=True)
