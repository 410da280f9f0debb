"""The kernel_ref differential suite, run by `make test` (issue 6).

Every scenario of kernel_ref/scenarios runs on the real linux.uml and on `ubdsim run
--kernel 6.1` (one run of the whole suite, shared by the tests below). If linux.uml cannot
run here, these tests FAIL with the reason: the oracle is the point, never skip it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kernel_ref import golden, launcher, scenario
from kernel_ref.compare import compare
from kernel_ref.known_gaps import KNOWN_GAPS
from kernel_ref.run import run_many

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def verdicts():
    """One live run of every scenario: linux.uml vs ubdsim, linux.uml vs golden (notes)."""
    launcher.require_kernel()       # KernelUnavailable: every test here fails with its one line
    return run_many(list(scenario.load_all().values()), "live", None, lambda v: None)


def _report(bad) -> str:
    return "\n\n".join(f"{v.name}:\n  " + "\n".join(v.diffs + v.notes).replace("\n", "\n  ")
                       for v in bad)


def test_at_least_forty_scenarios_each_with_a_golden_capture():
    table = scenario.load_all()
    assert len(table) >= 40
    missing = [name for name in table if golden.load(name) is None]
    assert not missing, f"no golden capture (run python -m kernel_ref capture NAME): {missing}"


def test_linux_uml_still_matches_its_golden_captures(verdicts):
    """A difference here means the kernel package (or the host) changed, not ubdsim."""
    drifted = [v for v in verdicts if any("differs from its golden" in n for n in v.notes)]
    kernel_failed = [v for v in verdicts if any("linux.uml could not run" in d for d in v.diffs)]
    assert not kernel_failed, _report(kernel_failed)
    assert not drifted, _report(drifted)


def test_ubdsim_agrees_with_linux_uml_except_the_known_gaps(verdicts):
    """Every scenario agrees, but for those listed with a reason in kernel_ref/known_gaps.py.

    A scenario outside the table that disagrees is a regression; one inside it that agrees
    is a fix whose row must be removed, so the table never hides a working behaviour.
    """
    regressions = [v for v in verdicts if not v.agree and v.name not in KNOWN_GAPS]
    fixed = [v.name for v in verdicts if v.agree and v.name in KNOWN_GAPS]
    assert not regressions, (f"{len(regressions)}/{len(verdicts)} scenarios disagree:\n"
                             + _report(regressions))
    assert not fixed, f"these now agree with linux.uml; remove them from KNOWN_GAPS: {fixed}"


def test_every_known_gap_names_an_existing_scenario():
    assert set(KNOWN_GAPS) <= set(scenario.load_all())


def test_a_flipped_bitmap_bit_is_named():
    """The diff names a bitmap byte and sector in a file the kernel wrote (golden capture)."""
    kernel = golden.load("io-direct-write-exact-sectors")
    changed = golden.load("io-direct-write-exact-sectors")
    image = changed.files["cow.img"]
    off, length = next((o, n) for o, n in image.extents if o <= 8192 < o + n)
    chunk = bytearray(image.chunks[image.extents.index((off, length))])
    chunk[8192 - off + 1] ^= 0x04                     # bitmap byte 1, bit 2: sector 10
    image.chunks[image.extents.index((off, length))] = bytes(chunk)
    changed.source = "ubdsim"
    text = "\n".join(compare(kernel, changed))
    assert "file cow.img: 1 byte(s) differ; first at offset 8193" in text
    assert "bitmap byte 1 (sectors 8-15); sector 10: clear vs set" in text


def test_cli_list_names_every_scenario():
    out = subprocess.run([sys.executable, "-m", "kernel_ref", "list"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    assert [line.split()[0] for line in out.splitlines()] == list(scenario.load_all())


def _replanted(tmp_path, name: str, path: str, offset: int, data: bytes):
    """The golden capture of `name` with `data` planted in file `path` at `offset`, then
    normalised as a fresh snapshot is."""
    from kernel_ref.filters import Normaliser
    from kernel_ref.observe import snapshot_file
    recorded = golden.load(name)
    content = bytearray(recorded.files[path].content())
    content[offset:offset + len(data)] = data
    target = tmp_path / "planted.img"
    with open(target, "wb") as f:                     # the golden's extents, holes kept
        f.truncate(len(content))
        for off, length in recorded.files[path].extents:
            f.seek(off)
            f.write(content[off:off + length])
    planted = golden.load(name)
    planted.files[path] = snapshot_file(target, Normaliser(str(tmp_path)))
    planted.source = "planted"
    return compare(recorded, planted)


def test_the_bitmap_write_back_spill_is_masked_and_nothing_else(tmp_path):
    """The bytes linux.uml wrote after the bitmap of an 8194-sector V3 file in one CI run
    (uninitialised vmalloc memory carried by cowify_bitmap()'s two-word write-back) are
    masked; a byte past what that write-back reaches, or a real bitmap bit, is not."""
    name, path = "create-size-not-sector-multiple", "cow.img"     # bitmap 8192+1025
    assert _replanted(tmp_path, name, path, 9217, bytes.fromhex("544e94")) == []
    assert _replanted(tmp_path, name, path, 9223, b"\x01") == []   # end of the last word
    beyond = "\n".join(_replanted(tmp_path, name, path, 9224, b"\x01"))
    assert "1 byte(s) differ; first at offset 9224" in beyond
    real = "\n".join(_replanted(tmp_path, name, path, 9216, b"\x03"))
    assert "first at offset 9216" in real and "bitmap byte 1024" in real
