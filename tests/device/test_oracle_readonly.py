"""The EROFS fallback, against linux.uml: a COW file on a read-only mount opens read-only
(no message), and a COW file that would have to be created there fails with the kernel's
messages. Kernel and ubdsim each run in a private mount namespace (unshare -m) with the
same read-only bind mount."""
from __future__ import annotations

import json
import subprocess
import sys

from .oracle import boot, readonly_mount, ubd_lines

PROBE = r"""
import json, sys
from ubdsim.cmdline.spec import UnitSpec
from ubdsim.device.open import boot_units
from ubdsim.profiles import get_profile
specs = [UnitSpec(0, "ro/cow0.img", "back.img"), UnitSpec(1, "ro/new.img", "back.img")]
units, messages, failures = boot_units(specs, get_profile("6.1"))
view = {n: [u.readonly, u.read(0, 512).hex()] for n, u in units.items()}
try:
    units[0].write(0, bytes(512))
    view["write"] = "ok"
except Exception as err:
    view["write"] = err.errno
print(json.dumps({"messages": messages, "view": view, "failed": {n: e.errno for n, e in failures.items()}}))
"""


def test_read_only_mount_fallback_matches_kernel(tmp_path):
    work, real = tmp_path / "w", tmp_path / "real"
    work.mkdir()
    real.mkdir()
    (work / "ro").mkdir()
    (work / "back.img").write_bytes(bytes(range(256)) * 4096)
    subprocess.run(["uml_mkcow", str(real / "cow0.img"), str(work / "back.img")], check=True,
                   capture_output=True)
    before = (real / "cow0.img").read_bytes()
    prefix = readonly_mount(real, work / "ro")
    result = tmp_path / "guest.txt"
    console = boot(work, ["ubd0=ro/cow0.img,back.img", "ubd1=ro/new.img,back.img"],
                   [f"blockdev --getro /dev/ubda > {result}",
                    f"dd if=/dev/zero of=/dev/ubda bs=512 count=1 oflag=direct 2>/dev/null; echo $? >> {result}"],
                   tmp_path / "scratch", prefix=prefix)
    ours = json.loads(subprocess.run([*prefix, sys.executable, "-c", PROBE], cwd=work, check=True,
                                     capture_output=True, text=True).stdout)
    assert ubd_lines(console) == ours["messages"]
    assert ours["messages"] == ["Open of COW file 'ro/new.img' failed, errno = 30",
                                "Failed to open 'ro/new.img', errno = 30",
                                "ubdb: Can't open \"ro/new.img\": errno = 30"]
    getro, dd_status = result.read_text().split()
    assert getro == "1" and ours["view"]["0"][0] is True
    assert dd_status != "0" and ours["view"]["write"] == 30
    assert ours["failed"] == {"1": 30}
    assert (real / "cow0.img").read_bytes() == before
    assert not (real / "new.img").exists()
