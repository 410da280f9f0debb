"""Buffered reads through the page cache and readahead, against linux.uml 6.1.

On a 6.1 COW unit whose first page mixes COW and backing sectors, what a buffered read sees
in the following pages depends on how the kernel's readahead grouped them into requests
(do_io()'s offset drift), so these transcripts check the windows themselves. A shell
descriptor held open keeps the page cache alive across the dd runs (it is dropped at the
disk's last close), which checks that cached pages follow later O_DIRECT writes
(invalidated) and buffered writes (updated, and written back from the cached page), and
that a page a buffered write covered is cached (readahead then reads around it).
"""
from __future__ import annotations

from .oracle import boot_uml, cow_regions, make_backing, ubdsim_body

WORDS = ["ubd0=cow.img,back.img"]
BODY = """\
head -c 512 /dev/zero | tr '\\0' W > w
head -c 512 /dev/zero | tr '\\0' X > x
head -c 512 /dev/zero | tr '\\0' Y > y
sums() {
  dd if=/dev/ubda bs=512 count=64 2>/dev/null | md5sum
  dd if=/dev/ubda bs=512 count=64 iflag=direct 2>/dev/null | md5sum
}
exec 3</dev/ubda
dd if=w of=/dev/ubda bs=512 seek=3 count=1 oflag=direct 2>/dev/null
dd if=w of=/dev/ubda bs=512 seek=4 count=1 oflag=direct 2>/dev/null
echo "== mixed first page"; sums
dd if=x of=/dev/ubda bs=512 seek=9 count=1 oflag=direct 2>/dev/null
echo "== direct write into a cached page"; sums
dd if=y of=/dev/ubda bs=512 seek=17 count=1 conv=notrunc 2>/dev/null
echo "== buffered write into a cached page"; sums
dd if=/dev/ubda bs=4096 skip=1 count=3 2>/dev/null | md5sum
exec 3<&-
echo "== after the last close"; sums
exec 3</dev/ubda
dd if=w of=/dev/ubda bs=512 seek=161 count=1 oflag=direct 2>/dev/null
dd if=y of=/dev/ubda bs=512 seek=170 count=1 conv=notrunc 2>/dev/null
echo "== a random read, then a window around a page a buffered write cached"
dd if=/dev/ubda bs=512 skip=152 count=40 2>/dev/null | md5sum
dd if=/dev/ubda bs=512 skip=152 count=40 iflag=direct 2>/dev/null | md5sum
exec 3<&-
echo "== end"
"""


def _prepare(workdir):
    make_backing(workdir / "back.img", 1 << 20, seed=3)
    return BODY


def test_buffered_reads_and_cache_coherence_match_kernel(tmp_path_factory):
    uml_dir, sim_dir = tmp_path_factory.mktemp("uml"), tmp_path_factory.mktemp("ubdsim")
    uml = boot_uml(uml_dir, WORDS, _prepare(uml_dir))
    sim = ubdsim_body(sim_dir, WORDS, _prepare(sim_dir))
    assert "== end" in uml.output
    lines = uml.output.splitlines()
    # The oracle shows the effect this test is about: buffered and direct sums differ.
    assert lines[1] != lines[2]
    assert sim.output.splitlines() == lines
    assert sim.status == uml.status == 0
    assert cow_regions(sim_dir / "cow.img") == cow_regions(uml_dir / "cow.img")
