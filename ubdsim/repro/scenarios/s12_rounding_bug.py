"""The V1/V2 rounding bug: the bitmap is one byte short, and 2.4 writes the missing bits
over the first sector of the data area."""
from ..model import Scenario, guest, sh

_SIZE = 3906 * 512        # V2: bitmap_len 488 (2.4's device: whole KiB, so an even count), bitmap 4120..4608 = the data area's start
_READ0 = "dd if={dev} bs=512 count=1 iflag=direct 2>/dev/null | od -An -c | head -1"

SCENARIO = Scenario(
    name="rounding-bug",
    title="the V1/V2 rounding bug: the last sectors' bitmap write-back lands on sector 0's data",
    profiles=("2.4", "2.4-stock"),
    explain={"*": (
        "[2.4] cow_sizes() for version < 3 computes bitmap_len = (size + 511) / (8 * 512) with "
        "integer division: for 3906 sectors that is 488 bytes, one short (sectors 3904-3905 have no bit), and data_offset = "
        "ROUND_UP(4120 + 488, 512) = 4608, where the missing byte would be. Writing sector 3904 "
        "sets its bit in memory and do_io()'s bitmap write-back writes the two 32-bit words from "
        "4120 + 4 * (3904 / 32) = 4608 with no guard at the bitmap's end: 8 bytes over the first "
        "bytes of sector 0's data in the COW file. The guest's sector 0 is corrupted by a write "
        "to its last sector. Safe: a backing file whose size is a whole number of 4 KiB (a "
        "multiple of 8 sectors), where the formula is exact (or a V3 file under 6.1).")},
    setup=(sh("a backing file of 3906 sectors, a V2 COW file, a sector of 'A'",
              f"truncate -s {_SIZE} b.img && {{ubdsim}} mkcow --kernel {{kernel}} c.cow b.img && "
              "head -c 512 /dev/zero | tr '\\0' A > a.sec"),),
    damage=(
        sh("info reports the hazard", "{ubdsim} info c.cow", shows=("rounding",)),
        guest("sector 0 written, then the last sector", "ubd0=c.cow,b.img",
              "dd if=a.sec of={dev} bs=512 count=1 oflag=direct 2>/dev/null && "
              "dd if=a.sec of={dev} bs=512 seek=3904 count=1 oflag=direct 2>/dev/null && " + _READ0,
              shows=("001  \\0  \\0  \\0  \\0  \\0  \\0  \\0   A   A",)),
        sh("check cannot see it: the overwritten bytes are data, not metadata", "{ubdsim} check c.cow"),
    ),
    safe=(
        sh("pad the backing file to a whole 4 KiB and make the COW file again",
           f"truncate -s {3912 * 512} b.img && rm c.cow && {{ubdsim}} mkcow --kernel {{kernel}} c.cow b.img"),
        guest("the same writes", "ubd0=c.cow,b.img",
              "dd if=a.sec of={dev} bs=512 count=1 oflag=direct 2>/dev/null && "
              "dd if=a.sec of={dev} bs=512 seek=3904 count=1 oflag=direct 2>/dev/null && " + _READ0,
              shows=("A   A   A   A   A   A   A   A   A   A   A   A   A   A   A   A",)),
        sh("clean", "{ubdsim} check c.cow"),
    ),
)
