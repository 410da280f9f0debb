"""Guest program: 4 threads and a forked child pwrite/pread one shared descriptor of
/dev/ubda, each in its own region; every reader checks what it wrote."""
import hashlib
import os
import sys
import threading

REGION = 64 * 1024
BASE = 2 << 20
fd = os.open("/dev/ubda", os.O_RDWR)
errors = []


def pattern(worker: int, i: int) -> bytes:
    return (f"worker {worker} block {i} ".encode() * 300)[:4096]


def work(worker: int) -> None:
    start = BASE + worker * REGION
    for i in range(REGION // 4096):
        os.pwrite(fd, pattern(worker, i), start + i * 4096)
    for i in range(REGION // 4096):
        if os.pread(fd, 4096, start + i * 4096) != pattern(worker, i):
            errors.append((worker, i))


threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
for t in threads:
    t.start()
pid = os.fork()
if pid == 0:
    work(4)
    os._exit(1 if errors else 0)
for t in threads:
    t.join()
_, status = os.waitpid(pid, 0)
print("child status", os.waitstatus_to_exitcode(status))
print("errors", errors)
print("region md5", hashlib.md5(os.pread(fd, 5 * REGION, BASE)).hexdigest())
sys.exit(1 if errors else 0)
