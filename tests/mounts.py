"""Real small filesystems for tests that need a full disk, sparse files larger than ext4's
16 TiB limit, or extents that files can share: a tmpfs, or an XFS with reflinks on a loop
device, mounted under the test's directory (tests run as root), always unmounted. The XFS
one is used by scripts/bench_moo.py too."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of `size` (mount's notation: 1m, 6g) at `mountpoint`, created if needed."""
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


@contextmanager
def xfs_reflink(mountpoint: Path, size: str = "1g") -> Iterator[Path]:
    """A fresh XFS with reflink=1 (copy_file_range then shares extents instead of copying)
    on a sparse image file of `size` beside `mountpoint`, loop-mounted there. Raises
    subprocess.CalledProcessError (mkfs.xfs or mount failed: the caller says why)."""
    mountpoint.mkdir(exist_ok=True)
    image = mountpoint.with_name(mountpoint.name + ".xfs.img")
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    try:
        subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True,
                       capture_output=True)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=True)
    finally:
        image.unlink()
