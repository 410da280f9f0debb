"""6.1's backing switch rewrites a V2 COW file's header as V3 and loses its bitmap."""
from ..model import Scenario, guest, sh

_READ = "dd if={dev} bs=512 count=1 iflag=direct 2>/dev/null | head -c 14; echo"

SCENARIO = Scenario(
    name="switch-v2-v3",
    title="6.1's backing switch writes a V3 header over a V2 file's bitmap",
    profiles=("6.1",),
    explain={"6.1": (
        "[6.1] open_ubd_file(): the backing file named (copy.img) is not the header's, but has "
        "its size and mtime, so the kernel switches ('Switching backing file to') and "
        "write_cow_header() rewrites the header, always as V3 (4128 bytes) even over this V2 "
        "file (4120): the first 8 bytes of the old bitmap, the bits of sectors 0-63, are "
        "overwritten, and the file is then read with the V3 geometry (bitmap at 4096-aligned "
        "offsets, data elsewhere). The guest's sector 0 no longer reads what the guest wrote there; "
        "`ubdsim check` names the V3 header over a V2 file, which `ubdsim repair` undoes. Safe: "
        "`ubdsim rebase -b copy.img c.cow` rewrites the header in the file's own version.")},
    setup=(sh("a 1 MiB backing file of 'B', a V2 COW file over it",
              "head -c 1048576 /dev/zero | tr '\\0' B > base.img && touch -d @1000000000 base.img && "
              "{ubdsim} mkcow --cow-version 2 c.cow base.img && for s in 0 1 2 3 4 5 6 7; do "
              "printf 'guest sector %d' $s | dd of=w.dat bs=512 seek=$s conv=sync,notrunc 2>/dev/null; done"),
           guest("the guest writes sectors 0-7, each naming itself", "ubd0=c.cow,base.img",
                 "dd if=w.dat of={dev} bs=4096 count=1 oflag=direct 2>/dev/null && " + _READ,
                 shows=("guest sector 0",)),
           sh("a copy of the backing file that keeps its mtime", "cp -p base.img copy.img")),
    damage=(
        guest("the copy named: switched, and sector 0 no longer reads the guest's sector 0",
              "ubd0=c.cow,copy.img", _READ, shows=("Switching backing file to",),
              hides=("guest sector 0",), same=True),
        sh("check names the damage", "{ubdsim} check c.cow", expect=(2, 3)),
    ),
    safe=(
        sh("rebase instead: the header stays V2", "{ubdsim} rebase -b copy.img c.cow && "
           "{ubdsim} info c.cow", shows=("version 2",)),
        guest("the guest's data is there", "ubd0=c.cow,copy.img", _READ, shows=("guest sector 0",),
              hides=("Switching",)),
        sh("clean", "{ubdsim} check c.cow"),
    ),
)
