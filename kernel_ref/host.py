"""Host-side actions between boots, and the conditions held during a boot.

Both backends see exactly the same host actions: they run here, in Python, not in a backend.
Conditions held during a boot:
- locks: a helper process holds an fcntl(F_SETLK) whole-file lock (the kind os_lock_file()
  [6.1] takes), so the simulated or real kernel meets a file "already locked by pid N";
- ro_dirs: a read-only bind mount over a directory, so an O_RDWR open fails with EROFS and
  open_ubd_file() [6.1] falls back to read-only (root bypasses mode bits, so chmod 444 alone
  never gives EACCES to root);
- run_as "nobody": the backend runs as nobody, the working directory is chowned to it first,
  so a chmod 444 file gives EACCES: the other read-only fallback;
- immutable: `chattr +i` on files for the boot: an O_RDWR open fails with EPERM, which is
  NOT one of the errors open_ubd_file() falls back on (undone after the boot).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from .fixtures import write_backing

# A tiny lock holder: lock, say so, wait for stdin to close. fcntl.lockf is F_SETLK on Linux.
_LOCKER = r"""
import fcntl, os, sys
path, kind = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR if kind == "write" else os.O_RDONLY)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if kind == "write" else fcntl.LOCK_SH | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


def apply(work: Path, step: dict) -> None:
    """One host step (see kernel_ref/steps.py for their meaning)."""
    op = step["op"]
    if op == "touch":
        os.utime(work / step["path"], (step["mtime"], step["mtime"]))
    elif op == "move":
        os.rename(work / step["src"], work / step["dst"])
    elif op == "copy":
        copier = shutil.copy2 if step["preserve"] else shutil.copyfile
        copier(work / step["src"], work / step["dst"])
    elif op == "replace":
        target = work / step["path"]
        target.unlink()
        write_backing(target, step["size"], step["tag"], "pattern", step["mtime"])
    elif op == "chmod":
        os.chmod(work / step["path"], step["mode"])
    elif op == "remove":
        (work / step["path"]).unlink()
    elif op == "poke":
        with open(work / step["path"], "r+b") as f:
            f.seek(step["offset"])
            f.write(bytes.fromhex(step["data"]))
    else:
        raise ValueError(f"unknown host step {op!r}")


def user_ids(name: str) -> tuple[int, int]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def give_to(work: Path, user: str) -> None:
    """chown -R the working directory (and make its parents traversable) for run_as."""
    uid, gid = user_ids(user)
    for root, dirs, files in os.walk(work):
        os.chown(root, uid, gid)
        for name in files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
    make_reachable(work)


def make_reachable(path: Path) -> None:
    """Make every directory above `path` traversable (g+x, o+x), so that run_as's user can
    reach it: a work directory, or a library linux.uml preloads from a checkout that lies
    under a private (0700) directory."""
    for parent in Path(path).resolve().parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            os.chmod(parent, mode | 0o011)


def run_as_prefix(user: str | None) -> list[str]:
    """The command prefix that runs a backend as `user` (util-linux setpriv)."""
    if user is None:
        return []
    uid, gid = user_ids(user)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]


@contextlib.contextmanager
def held(work: Path, boot: dict) -> Iterator[dict[int, str]]:
    """Hold a boot's locks and read-only mounts; yields {locker pid: placeholder name}."""
    lockers: list[subprocess.Popen] = []
    mounted: list[Path] = []
    frozen: list[Path] = []
    pids: dict[int, str] = {}
    try:
        for name in boot.get("immutable", []):
            subprocess.run(["chattr", "+i", str(work / name)], check=True)
            frozen.append(work / name)
        for d in boot.get("ro_dirs", []):
            target = work / d
            subprocess.run(["mount", "--bind", str(target), str(target)], check=True)
            mounted.append(target)
            subprocess.run(["mount", "-o", "remount,ro,bind", str(target)], check=True)
        for n, spec in enumerate(boot.get("locks", []), 1):
            proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(work / spec["path"]),
                                     spec["kind"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
            lockers.append(proc)
            if proc.stdout.readline().strip() != "locked":
                raise RuntimeError(f"lock helper could not lock {spec['path']}")
            pids[proc.pid] = f"LOCKER{n}"
        yield pids
    finally:
        for proc in lockers:
            proc.stdin.close()
            proc.wait(timeout=30)
        for target in reversed(mounted):
            subprocess.run(["umount", str(target)], check=False)
        for path in frozen:
            subprocess.run(["chattr", "-i", str(path)], check=False)
