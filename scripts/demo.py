#!/usr/bin/env python3
"""`make demo`: the COW format tools on a small ext2 image, start to finish.

1. build a reproducible 8 MiB ext2 image (guest_images/build_ext2.py) as the backing file;
2. `ubdsim mkcow` a COW file over it;
3. change a file of the filesystem by writing its data block into the COW file through the
   library (ubdsim.cow.image.CowImage.write), as a guest's write would;
4. `ubdsim info` the COW file;
5. `ubdsim moo` it into a new image, and show that the new image has the change while the
   backing file does not;
6. print the space the COW file saves (apparent vs allocated bytes, as `ls -ls` shows them).
Everything is written to demo-out/ (removed by `make clean`).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ubdsim.cow.image import CowImage  # noqa: E402

OUT = os.path.join(ROOT, "demo-out")        # --out DIR changes it (the tests use a temp dir)
OLD_MOTD = "Welcome to a copy-on-write block device.\n"
NEW_MOTD = "Hello from the COW file; backing intact!\n"


def say(text: str) -> None:
    print(f"\n== {text}")


def sh(*cmd: str, show: bool = True) -> str:
    """Run a command from demo-out/, echo it like a shell session, return its stdout."""
    if show:
        print("$ " + " ".join(cmd))
    argv = [sys.executable, "-m", "ubdsim", *cmd[1:]] if cmd[0] == "ubdsim" else list(cmd)
    result = subprocess.run(argv, cwd=OUT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"demo: '{' '.join(cmd)}' failed: {result.stderr.strip()}")
    if show and result.stdout:
        print(result.stdout.rstrip())
    return result.stdout


def file_block(image: str, path: str) -> int:
    """The first data block (1 KiB blocks) of `path` in an ext2 image, from debugfs."""
    out = sh("debugfs", "-R", f"blocks {path}", image, show=False)
    return int(re.findall(r"\d+", out)[0])


def ls_ls(*names: str) -> None:
    print("$ ls -ls " + " ".join(names))
    for name in names:
        st = os.stat(os.path.join(OUT, name))
        print(f"{st.st_blocks // 2:>8} {st.st_size:>10}  {name}")


def main(argv: list[str] | None = None) -> int:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=OUT, help="output directory (emptied first)")
    OUT = os.path.abspath(parser.parse_args(argv).out)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)

    say("1. a small ext2 image, built reproducibly, is the shared read-only backing file")
    subprocess.run([sys.executable, os.path.join(ROOT, "guest_images", "build_ext2.py"),
                    os.path.join(OUT, "base.img")], check=True)
    print("$ debugfs -R 'cat /etc/motd' base.img")
    print(sh("debugfs", "-R", "cat /etc/motd", "base.img", show=False), end="")

    say("2. a COW file over it: header, all-clear bitmap, data area that is one big hole")
    sh("ubdsim", "mkcow", "guest.cow", "base.img")

    say("3. a guest writes: /etc/motd's data block goes into the COW file (library write)")
    block = file_block("base.img", "/etc/motd")
    data = NEW_MOTD.encode().ljust(1024, b"\0")
    with CowImage.open(os.path.join(OUT, "guest.cow"), writable=True) as cow:
        cow.write(block * 1024, data)
        cow.fsync()
    print(f"wrote 1024 bytes at device offset {block * 1024} (ext2 block {block}): "
          f"2 sectors marked in the bitmap")

    say("4. what the COW file holds")
    sh("ubdsim", "info", "guest.cow")

    say("5. merge: backing + COW -> a new standalone image (sparse, fsynced, renamed in place)")
    sh("ubdsim", "moo", "guest.cow", "merged.img")
    for name in ("base.img", "merged.img"):
        print(f"$ debugfs -R 'cat /etc/motd' {name}")
        print(sh("debugfs", "-R", "cat /etc/motd", name, show=False), end="")
    print("$ e2fsck -fn merged.img")
    print(sh("e2fsck", "-fn", "merged.img", show=False).strip().splitlines()[-1])

    say("6. space: apparent size vs allocated (ls -ls: first column is KiB allocated)")
    ls_ls("base.img", "guest.cow", "merged.img")
    base, cow = (os.stat(os.path.join(OUT, n)) for n in ("base.img", "guest.cow"))
    copy_alloc, cow_alloc = base.st_blocks * 512, cow.st_blocks * 512
    print(f"a private copy of base.img would allocate {copy_alloc} bytes; the COW file allocates "
          f"{cow_alloc} bytes for an apparent {cow.st_size}: {copy_alloc - cow_alloc} bytes saved "
          f"({100 * (copy_alloc - cow_alloc) / copy_alloc:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
