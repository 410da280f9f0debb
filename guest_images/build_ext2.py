#!/usr/bin/env python3
"""Build a small, reproducible ext2 image: the same bytes on every run and every machine.

    python3 guest_images/build_ext2.py OUT.img [--size-kib 8192]

The tree is made here (a few text files, a directory, a symlink, a 200 KiB file of seeded
bytes) with fixed timestamps and modes, then `mke2fs -t ext2 -d TREE` copies it in. What makes
the result deterministic:
- E2FSPROGS_FAKE_TIME fixes every time mke2fs itself stamps (superblock, root, lost+found);
- `-U` fixes the filesystem UUID and `-E hash_seed=` the directory-hash seed (both random
  by default), `-E root_owner=0:0` the owner of / whoever runs the script;
- the tree's files have fixed mtimes/atimes and modes, and mke2fs copies them; their ctimes
  (which no program can set) are overwritten afterwards with debugfs;
- the output is written to a temporary name and renamed, so a failed build leaves nothing.
The image's apparent size is --size-kib; mke2fs leaves unused blocks as holes.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile

FIXED_TIME = 1_100_000_000            # 2004-11-09: a UML-era date
UUID = "0b5e55ed-c0de-4d0e-b10c-00000000cafe"
HASH_SEED = "5eed5eed-0000-4000-8000-000000000001"

FILES = {
    "README": "This filesystem was built by ubdsim's guest_images/build_ext2.py.\n"
              "Write to it through a COW file; the backing file never changes.\n",
    "etc/hostname": "ubdsim-guest\n",
    "etc/motd": "Welcome to a copy-on-write block device.\n",
    "home/user/notes.txt": "".join(f"line {i}: the quick brown cow jumps over the lazy moo\n"
                                   for i in range(200)),
}


def make_tree(root: str) -> None:
    for rel, text in FILES.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
    with open(os.path.join(root, "home/user/random.bin"), "wb") as f:
        f.write(random.Random(2024).randbytes(200 * 1024))
    os.symlink("etc/motd", os.path.join(root, "motd"))
    # fixed modes and times for everything (directories last, after their contents)
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)
            os.utime(path, (FIXED_TIME, FIXED_TIME), follow_symlinks=False)
    os.chmod(root, 0o755)
    os.utime(root, (FIXED_TIME, FIXED_TIME))


def fix_ctimes(image: str, tree: str, env: dict) -> None:
    """mke2fs -d copies each file's ctime, which no program may set: pin them with debugfs."""
    paths = ["/"] + ["/" + os.path.relpath(os.path.join(d, n), tree)
                     for d, dirs, files in os.walk(tree) for n in sorted(dirs + files)]
    script = "".join(f'sif "{p}" ctime @{FIXED_TIME}\n' for p in sorted(paths))
    result = subprocess.run(["debugfs", "-w", "-f", "-", image], input=script, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"build_ext2: debugfs failed: {result.stderr.strip()}")


def build(out: str, size_kib: int) -> None:
    out = os.path.abspath(out)
    work = tempfile.mkdtemp(prefix="ubdsim-ext2-")
    temp = out + ".building"
    try:
        tree = os.path.join(work, "tree")
        os.mkdir(tree)
        make_tree(tree)
        env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(FIXED_TIME), MKE2FS_CONFIG="/dev/null")
        cmd = ["mke2fs", "-q", "-F", "-t", "ext2", "-b", "1024", "-m", "0", "-L", "ubdsim",
               "-U", UUID, "-E", f"hash_seed={HASH_SEED},root_owner=0:0", "-d", tree,
               temp, f"{size_kib}k"]
        if os.path.exists(temp):
            os.unlink(temp)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"build_ext2: mke2fs failed: {result.stderr.strip()}")
        fix_ctimes(temp, tree, env)
        os.utime(temp, (FIXED_TIME, FIXED_TIME))
        os.rename(temp, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if os.path.exists(temp):
            os.unlink(temp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--size-kib", type=int, default=8192)
    args = parser.parse_args(argv)
    build(args.out, args.size_kib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
