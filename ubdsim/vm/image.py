"""The guest's kernel and initramfs, built once by guest_images/qemu/build_image.py.

The builder is a standalone script (it also runs by hand, without ubdsim installed); it
caches its output under the user cache directory and prints the build directory, so a
second call costs one short subprocess and no apt access.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UbdError

BUILDER = Path(__file__).resolve().parents[2] / "guest_images" / "qemu" / "build_image.py"


@dataclass(frozen=True)
class GuestImage:
    vmlinux: Path
    initramfs: Path


def guest_image() -> GuestImage:
    """Build (first time) or find the cached guest; UbdError when the build fails."""
    if not BUILDER.is_file():
        raise UbdError(f"guest image builder not found: {BUILDER}")
    done = subprocess.run([sys.executable, str(BUILDER)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise UbdError("building the qemu guest image failed (see the lines above)")
    directory = Path(done.stdout.strip().splitlines()[-1])
    image = GuestImage(directory / "vmlinux", directory / "initramfs.cpio.gz")
    if not (image.vmlinux.is_file() and image.initramfs.is_file()):
        raise UbdError(f"guest image incomplete in {directory}")
    return image


def workload_initrd(image: GuestImage, script: bytes, destination: Path) -> Path:
    """The cached initramfs followed by a second archive holding `/workload.sh`
    (the kernel unpacks concatenated cpio archives, compressed or not, in order)."""
    sys.path.insert(0, str(BUILDER.parent))
    try:
        import build_image  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BUILDER.parent))
    destination.write_bytes(image.initramfs.read_bytes() + build_image.workload_archive(script))
    return destination
