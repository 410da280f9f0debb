"""`ubdsim vm` with the COW file on a full host filesystem (a small tmpfs): the guest gets an
I/O error, as a linux.uml guest does, instead of being paused by qemu's default
werror=enospc until the timeout; ubdsim says what happened in one line. The same boot also
gets an --inject read fault through the NBD export. One qemu boot, one linux.uml boot."""
from __future__ import annotations

from pathlib import Path

from kernel_ref import launcher
from tests.mounts import tmpfs

from .test_vm import MIB, assert_cleaned_up, vm

# 1 MiB of guest writes, buffered, then fsync: the write-back's host pwrites hit ENOSPC.
FILL = "dd if=/dev/urandom of={dev} bs=64k count=16 conv=fsync 2>/dev/null; echo dd-exit=$?\n"
READ = "dd if=/dev/ubda of=/dev/null bs=4k skip=1000 count=1 2>/dev/null; echo read-exit=$?\n"
TMPFS = "128k"         # the COW file's header and bitmap fit, 1 MiB of data does not


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def linux_uml_fill(tmp_path: Path, backing: Path) -> str:
    """The oracle: FILL in linux.uml with its COW file on its own full tmpfs."""
    work = tmp_path / "uml"
    (work / "dev").mkdir(parents=True)
    with tmpfs(work / "full", TMPFS) as full:
        run = launcher.boot([f"ubd0={full / 'c.cow'},{backing}"], cwd=work, timeout=120,
                            script=f"mount -t devtmpfs none {work}/dev\n"
                            + FILL.format(dev=f"{work}/dev/ubda"))
    assert run.status is not None, run.problem
    return run.output


def test_full_host_disk_is_an_io_error_in_the_guest_and_said_once(tmp_path: Path) -> None:
    backing = sparse(tmp_path / "b.img", 8 * MIB)
    oracle = linux_uml_fill(tmp_path, backing)
    assert oracle == "dd-exit=1\n"
    with tmpfs(tmp_path / "full", TMPFS) as full:
        cow = full / "c.cow"
        done = vm(tmp_path, [f"ubd0={cow},{backing}"], FILL.format(dev="/dev/ubda") + READ,
                  "--inject", "read:error=EIO:sector=8000-8007", "--timeout", "240")
        assert done.returncode == 0, done.stdout + done.stderr
        said = [line for line in done.stdout.splitlines() if "-exit=" in line]
        assert said == [oracle.strip(), "read-exit=1"]
        ours = [line for line in done.stderr.splitlines() if line.startswith("ubdsim: host ")]
        assert ours == [
            f"ubdsim: host write to {cow} failed: No space left on device (guest got EIO; "
            "later failures like it are not shown)",
            f"ubdsim: host read of {cow} failed: Input/output error (--inject) (guest got EIO; "
            "later failures like it are not shown)"]
    assert_cleaned_up(tmp_path)
