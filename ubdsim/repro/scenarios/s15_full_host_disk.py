"""A full host disk under overbooking: the guest's buffered writes succeed and are lost."""
from ..model import Scenario, guest, sh

_FILL = ("dd if=data of={dev} bs=1M count=8 2>dd.err; echo dd=$?; tail -1 dd.err; sync; "
         "dd if={dev} bs=1M count=8 iflag=direct 2>/dev/null | cmp - data && echo same || echo lost")

SCENARIO = Scenario(
    name="full-host-disk",
    title="a full host disk under overbooking: lost async page writes (6.1)",
    profiles=("6.1",),
    explain={"6.1": (
        "Three 32 MiB COW files sit on a 6 MiB host file system: sparse, so they fit until the "
        "guests write. The guest's buffered dd goes to its page cache and succeeds; at "
        "write-back the host's pwrite fails with ENOSPC, ubd_end_request() fails the request "
        "with an I/O error, and the block layer prints 'Buffer I/O error on dev ubda, logical "
        "block N, lost async page write': the guest's program was told nothing and the data is "
        "gone. Safe: a host file system that can hold the worst case (`ubdsim fleet` reports "
        "it), or writes that wait for the error (conv=fsync, O_DIRECT).")},
    setup=(sh("a 32 MiB backing file, 8 MiB of data, a 6 MiB host file system with three COW files",
              "truncate -s 32M base.img && head -c 8388608 /dev/urandom > data && mkdir full && "
              "mount -t tmpfs -o size=6m tmpfs full && for n in 1 2 3; do "
              "{ubdsim} mkcow full/g$n.cow base.img >/dev/null || exit 1; done"),),
    damage=(
        guest("guest 1 writes 8 MiB through its page cache", "ubd0=full/g1.cow,base.img", _FILL,
              shows=("dd=0", "lost async page write", "lost")),
    ),
    safe=(
        sh("a host file system as large as the worst case",
           "umount full && mount -t tmpfs -o size=100m tmpfs full"),
        guest("the same write", "ubd0=full/g1.cow,base.img", _FILL, shows=("dd=0", "same"),
              hides=("Buffer I/O error",)),
    ),
    cleanup=("umount -l full 2>/dev/null; true",),
)
