"""6.1's do_io() offset drift: a multi-page read whose first page mixes COW and backing."""
from ..model import Scenario, guest, sh

_BACKING = ("{python} -c \"import sys; sys.stdout.buffer.write(b''.join("
            "('sector %05d' % s).encode().ljust(512, b'.') for s in range(2048)))\" > b.img")
# Sector 8 as a 32 KiB buffered read returns it, and as a read of that sector alone.
_SHOW = ("dd if={dev} bs=32k count=1 2>/dev/null | dd bs=512 skip=8 count=1 2>/dev/null | head -c 12; echo; "
         "dd if={dev} bs=512 skip=8 count=1 iflag=direct 2>/dev/null | head -c 12; echo")

SCENARIO = Scenario(
    name="do-io-drift",
    title="6.1 do_io() offset drift: later pages of a read shifted",
    profiles=("6.1",),
    explain={"6.1": (
        "[6.1] do_io() walks a request's pages; within a page it splits the sectors into runs "
        "by the bitmap (COW or backing), but after the page it advances req->offset by the "
        "LAST run's length only. When a page mixes COW and backing sectors (the guest wrote "
        "sectors 3-4 with O_DIRECT), the following pages of that request are read from too low "
        "an offset: device sector 8 of a 32 KiB read returns backing sector 3. Nothing on disk "
        "is wrong, but whatever the guest reads that way (and writes back) is. Safe: write whole "
        "4 KiB pages (a buffered write writes back its whole page, so no page mixes sources).")},
    setup=(sh("a 1 MiB backing file whose sectors name themselves, a COW file",
              _BACKING + " && {ubdsim} mkcow c.cow b.img >/dev/null && printf 'guest' > g.dat"),),
    damage=(
        guest("write sectors 3-4 directly, then read 32 KiB", "ubd0=c.cow,b.img",
              "dd if=/dev/zero of={dev} bs=512 seek=3 count=2 oflag=direct 2>/dev/null; " + _SHOW,
              shows=("sector 00003\nsector 00008",), same=True),
    ),
    safe=(
        guest("write the same bytes through the page cache, then read 32 KiB", "ubd0=c.cow,b.img",
              "dd if=/dev/zero of={dev} bs=512 seek=3 count=2 conv=notrunc 2>/dev/null && sync; " + _SHOW,
              shows=("sector 00008\nsector 00008",), same=True),
    ),
)
