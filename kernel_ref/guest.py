"""Compiling a boot's guest steps into ONE POSIX sh script that both backends run unchanged.

linux.uml runs it from a tiny init wrapper (backends.py); `ubdsim run` runs it as its
command. Each step prints one line `<n> <op> <args> rc=<status> [...]` on stdout, so the
two transcripts compare line by line; the script exits with the number of failed steps.
Data written by the guest comes from pattern files prepared on the host beforehand
(`.kref/pat-*.bin`), so the guest needs nothing but dd and coreutils.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from .fixtures import SECTOR, sector_pattern

# mke2fs writes a random UUID, hash seed and the current time: fix all three so the kernel's
# and ubdsim's images can be compared byte for byte (libext2fs reads E2FSPROGS_FAKE_TIME).
MKFS_UUID = "6b756265-7265-6673-0000-00000000ca11"
MKFS_TIME = 1_600_000_000
SCRATCH = ".kref"     # inside the working directory, never compared
READ_FILE = SCRATCH + "/read-{boot}-{step}.bin"


def _dev(name: str) -> str:
    if not name.startswith("ubd") or not name[3:].isalpha():
        raise ValueError(f"guest device must be ubda, ubdb...: {name!r}")
    return f"/dev/{name}"


def _status(n: int, label: str, extra: str = "") -> str:
    """The shared tail of every step: count a failure, print the result line."""
    tail = f" {extra}" if extra else ""
    return (f'rc=$?; [ "$rc" = 0 ] || fails=$((fails + 1)); '
            f'echo "{n} {label} rc=$rc{tail}"')


def compile_boot(work: Path, boot_index: int, steps: list[dict]) -> tuple[str, dict[str, bytes]]:
    """The script text and the pattern files it needs ({relative path: bytes})."""
    lines = ["#!/bin/sh",
             f"# kernel_ref guest steps, boot {boot_index}: run unchanged by linux.uml and ubdsim run",
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH",
             "LC_ALL=C; export LC_ALL",
             f"cd {shlex.quote(str(work))} || exit 99",
             "fails=0"]
    patterns: dict[str, bytes] = {}
    for n, step in enumerate(steps, 1):
        op = step["op"]
        if op == "write":
            dev, first, count = _dev(step["dev"]), step["sector"], step["count"]
            pat = f"{SCRATCH}/pat-{boot_index}-{n}.bin"
            patterns[pat] = sector_pattern(step["tag"], first, count)
            conv = "notrunc,fsync" if step["fsync"] else "notrunc"
            oflag = " oflag=direct" if step["direct"] else ""
            mode = ("direct" if step["direct"] else "buffered") + ("+fsync" if step["fsync"] else "")
            lines.append(f"dd if={pat} of={dev} bs={SECTOR} seek={first} count={count} "
                         f"conv={conv}{oflag} 2>/dev/null")
            lines.append(_status(n, f"write {step['dev']} {first}+{count} {mode}"))
        elif op in ("read", "read_all"):
            dev = _dev(step["dev"])
            # Each read keeps its bytes (READ_FILE), so a checksum difference can be
            # explained sector by sector (compare.py); they are never compared as files.
            lines.append(f"tmp={READ_FILE.format(boot=boot_index, step=n)}")
            lines.append(': > "$tmp"')
            if op == "read":
                iflag = " iflag=direct" if step["direct"] else ""
                lines.append(f'dd if={dev} of="$tmp" bs={SECTOR} skip={step["sector"]} '
                             f'count={step["count"]}{iflag} 2>/dev/null')
                label = f"read {step['dev']} {step['sector']}+{step['count']}"
            else:
                lines.append(f'dd if={dev} of="$tmp" bs=65536 2>/dev/null')
                label = f"read_all {step['dev']}"
            lines.append(_status(n, label, 'bytes=$(wc -c < "$tmp") '
                                           'sha256=$(sha256sum < "$tmp" | cut -c1-64)'))
        elif op == "size":
            dev = _dev(step["dev"])
            lines.append(f"ro=$(blockdev --getro {dev} 2>/dev/null); "
                         f"bytes=$(blockdev --getsize64 {dev} 2>/dev/null)")
            lines.append(_status(n, f"size {step['dev']}", "bytes=$bytes ro=$ro"))
        elif op == "discard":
            first, count = step["sector"], step["count"]
            lines.append(f"blkdiscard -o {first * SECTOR} -l {count * SECTOR} "
                         f"{_dev(step['dev'])} 2>/dev/null")
            lines.append(_status(n, f"discard {step['dev']} {first}+{count}"))
        elif op == "sync":
            lines.append("sync")
            lines.append(_status(n, "sync"))
        elif op == "mkfs":
            extended = f"hash_seed={MKFS_UUID},root_owner=0:0"
            if not step["discard"]:
                extended += ",nodiscard"
            lines.append(f"E2FSPROGS_FAKE_TIME={MKFS_TIME} mkfs.ext2 -q -F -U {MKFS_UUID} "
                         f"-E {extended} {_dev(step['dev'])} >/dev/null 2>&1")
            lines.append(_status(n, f"mkfs {step['dev']}"))
        elif op == "fsck":
            lines.append(f"e2fsck -fn {_dev(step['dev'])} >/dev/null 2>&1")
            lines.append(_status(n, f"fsck {step['dev']}"))
        elif op == "fuzz":
            from .fuzz.step import compile_step     # the fuzzer's runner (imports this module)
            more, needed = compile_step(boot_index, n, step)
            lines += more
            patterns.update(needed)
        else:
            raise ValueError(f"unknown guest step {op!r}")
    lines.append('exit "$fails"')
    return "\n".join(lines) + "\n", patterns
