#!/usr/bin/env python3
"""Build (once) the qemu guest of `ubdsim vm`: Debian's 6.1 kernel and a busybox initramfs.

Why these pieces (measured on this machine kind, see guest-harness-notes.md "qemu guests"):
- The kernel comes from the Debian package `linux-image-amd64` depends on, fetched with
  `apt-get download` and unpacked with `dpkg -x`: nothing is installed on the host.
- qemu boots the uncompressed `vmlinux` through its PVH entry in about 1.7 s, the compressed
  `vmlinuz` in about 7 s, so the xz payload of the bzImage is unpacked here with `lzma`.
- `virtio_blk` and ext4 are modules in Debian's kernel: they go into the initramfs and `/init`
  loads them with busybox `insmod`, dependencies first (there is no modprobe/depmod data).
- `/init` runs `/workload.sh` (appended per run by `ubdsim vm` as a second cpio archive),
  prints `ubdsim-guest-status: N`, and reports N through qemu's isa-debug-exit port 0xf4
  (qemu then exits with (N << 1) | 1): a kernel panic exits qemu with 0 and no status line.

Output: a directory in the user cache (`$UBDSIM_CACHE`, else `$XDG_CACHE_HOME/ubdsim`, else
`~/.cache/ubdsim`) holding `vmlinux` and `initramfs.cpio.gz`; its path is printed on stdout.
A finished build is reused without touching apt. Standard library only (no cpio binary).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

META_PACKAGE = "linux-image-amd64"
BUSYBOX = "/bin/busybox"
# Load order: each module after the ones it needs (guest-harness-notes.md, measured).
MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_blk", "crc16", "mbcache", "crc32c_generic", "jbd2", "ext4"]
# e2fsprogs' mke2fs (the host's, with its shared libraries): busybox mke2fs makes only ext2,
# the guest should build a real ext4 (journal, extents) as `mkfs.ext4` does.
HOST_TOOLS = {"/sbin/mke2fs": "usr/local/sbin/mke2fs"}
HOST_TOOL_LINKS = {"usr/local/sbin/mkfs.ext4": "mke2fs"}
HOST_FILES = ["/etc/mke2fs.conf"]
XZ_MAGIC = b"\xfd7zXZ\x00"
DONE_MARK = "complete"

INIT_SCRIPT = r"""#!/bin/busybox sh
# /init of the ubdsim qemu guest (written by guest_images/qemu/build_image.py).
/bin/busybox mkdir -p /proc /sys /tmp /mnt /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/local/sbin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$m.ko || echo "ubdsim-init: insmod $m failed"
done
want=$(sed -n 's/.*ubdsim.disks=\([0-9]*\).*/\1/p' /proc/cmdline)
tries=0
while [ "$(ls /sys/block | grep -c '^vd')" -lt "${want:-0}" ] && [ $tries -lt 100 ]; do
    sleep 0.05; tries=$((tries + 1))
done
# Each disk carries its ubd name as virtio serial (ubda, ubd0...): link /dev/NAME to it.
for d in /sys/block/vd*; do
    s=$(cat $d/serial 2>/dev/null)
    [ -n "$s" ] && ln -s /dev/${d##*/} /dev/$s
done
cd /
echo "ubdsim-guest-start"
sh /workload.sh
rc=$?
sync
echo "ubdsim-guest-status: $rc"
printf "\\$(printf %03o $((rc & 255)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
"""


def cache_root() -> Path:
    explicit = os.environ.get("UBDSIM_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ubdsim"


def image_dir() -> Path:
    return cache_root() / "qemu"


def cached_build() -> Path | None:
    """The finished build, if any: `current` names it once every file is in place."""
    current = image_dir() / "current"
    if current.is_file():
        build = image_dir() / current.read_text().strip()
        if (build / DONE_MARK).is_file() and build.name.endswith(build_name("")[-10:]):
            return build
    return None


def build_name(package: str) -> str:
    """Cache key: the kernel package plus a digest of what goes into the initramfs."""
    digest = hashlib.sha256()
    digest.update(INIT_SCRIPT.encode() + "\n".join(MODULES).encode())
    for host_path in (BUSYBOX, *HOST_TOOLS, *HOST_FILES):
        digest.update(str(os.stat(host_path).st_size).encode())
    return f"{package}-{digest.hexdigest()[:10]}"


def kernel_package() -> str:
    """The versioned image package `linux-image-amd64` depends on (apt-get update if unknown)."""
    for attempt in range(2):
        out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
        found = re.findall(r"Depends:\s*(linux-image-\S+-amd64)", out.stdout)
        if found:
            return found[0]
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
    raise SystemExit(f"build_image: apt-cache cannot resolve {META_PACKAGE}")


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF kernel inside a bzImage: the xz stream after the setup code (Debian uses xz)."""
    start = vmlinuz.find(XZ_MAGIC)
    if start < 0:
        raise SystemExit("build_image: no xz payload in vmlinuz")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
    if not elf.startswith(b"\x7fELF"):
        raise SystemExit("build_image: the xz payload of vmlinuz is not an ELF kernel")
    return elf


class Cpio:
    """A `newc` cpio archive writer (the initramfs format the kernel unpacks)."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 1
        self.directories: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self.ino += 1
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.out.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.out.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        """`name` and its missing parents (the kernel does not create parents itself)."""
        parent = os.path.dirname(name)
        if parent:
            self.directory(parent)
        if name not in self.directories:
            self.directories.add(name)
            self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        if os.path.dirname(name):
            self.directory(os.path.dirname(name))
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.out.write(b"\0" * (-self.out.tell() % 512))
        return self.out.getvalue()


def workload_archive(script: bytes) -> bytes:
    """The per-run second archive: `/workload.sh`, appended uncompressed after the initramfs."""
    archive = Cpio()
    archive.file("workload.sh", script, 0o755)
    return archive.finish()


def shared_libraries(binary: str) -> list[str]:
    """The absolute library paths `ldd` resolves for a host binary (the loader included)."""
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return re.findall(r"(/\S+\.so[.\d]*)\s+\(0x", listing)


def build_initramfs(modules_dir: Path) -> bytes:
    archive = Cpio()
    for directory in ("bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp", "mnt"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)    # init's stdio before devtmpfs is mounted
    archive.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    archive.file("init", INIT_SCRIPT.encode(), 0o755)
    for name in MODULES:
        found = list(modules_dir.rglob(f"{name}.ko"))
        if len(found) != 1:
            raise SystemExit(f"build_image: module {name}.ko found {len(found)} times")
        archive.file(f"lib/modules/{name}.ko", found[0].read_bytes())
    archive.file("lib/modules/load-order", ("\n".join(MODULES) + "\n").encode())
    libraries: set[str] = set()
    for host_path, guest_path in HOST_TOOLS.items():
        archive.file(guest_path, Path(host_path).read_bytes(), 0o755)
        libraries.update(shared_libraries(host_path))
    for library in sorted(libraries):
        archive.file(library.lstrip("/"), Path(library).read_bytes(), 0o755)
    for name, target in HOST_TOOL_LINKS.items():
        archive.symlink(name, target)
    for host_path in HOST_FILES:
        archive.file(host_path.lstrip("/"), Path(host_path).read_bytes())
    return gzip.compress(archive.finish(), compresslevel=6)


def build() -> Path:
    cached = cached_build()
    if cached:
        return cached
    if not Path(BUSYBOX).is_file():
        raise SystemExit(f"build_image: {BUSYBOX} is missing (Debian package busybox-static)")
    package = kernel_package()
    root = image_dir()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        scratch_path = Path(scratch)
        print(f"build_image: downloading {package}", file=sys.stderr)
        # apt warns that its _apt user cannot write the scratch dir when run as root: only
        # show apt's output when the download fails.
        fetched = subprocess.run(["apt-get", "download", "-qq", package], cwd=scratch,
                                 capture_output=True, text=True)
        if fetched.returncode != 0:
            raise SystemExit(f"build_image: apt-get download {package} failed:\n{fetched.stderr}")
        debs = list(scratch_path.glob("*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[0]), str(scratch_path / "x")], check=True)
        vmlinuz = next((scratch_path / "x" / "boot").glob("vmlinuz-*"))
        build_dir = root / build_name(package)
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir()
        (build_dir / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
        (build_dir / "initramfs.cpio.gz").write_bytes(
            build_initramfs(scratch_path / "x" / "lib" / "modules"))
        (build_dir / DONE_MARK).write_text(package + "\n")
    (root / "current.tmp").write_text(build_dir.name + "\n")
    os.replace(root / "current.tmp", root / "current")
    for old in root.iterdir():          # builds of an older kernel or init script
        if old.is_dir() and old != build_dir and not old.name.startswith("tmp"):
            shutil.rmtree(old, ignore_errors=True)
    return build_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    print(build())
    return 0


if __name__ == "__main__":
    sys.exit(main())
