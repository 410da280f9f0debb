"""The posts' reversed order: `ubd0=backing,cow` instead of `ubd0=cow,backing`."""
from ..model import Scenario, guest, sh
from ._common import EXT4_BASE, FSCK, cows

SCENARIO = Scenario(
    name="reversed-order",
    title="the posts' reversed order ubd0=base.img,guest.cow",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={"*": (
        "The first field is the COW file. open_ubd_file() reads a COW header from base.img, "
        "finds none, and because a backing file is named it refuses the unit: 'Failed to read "
        "COW header from COW file \"base.img\"'. The guest gets no disk (its boot stops at the "
        "root file system), nothing is written: the reversed order is harmless until someone "
        "'fixes' it with `uml_mkcow -f` in the same order (scenario mkcow-f-reversed). "
        "`ubdsim explain` names the swap. Safe: ubd0=guest.cow,base.img.")},
    setup=(EXT4_BASE, sh("guest.cow over it", cows("guest.cow")),
           sh("the backing file's checksum", "sha256sum base.img > base.sum")),
    damage=(
        sh("explain sees the swap", "{ubdsim} explain --kernel {kernel} ubd0=base.img,guest.cow",
           expect=1, shows=("swapped",)),
        guest("the unit is refused: the guest has no disk", "ubd0=base.img,guest.cow", FSCK,
              expect=8, shows=('Failed to read COW header from COW file "base.img"',)),
        sh("nothing was written", "sha256sum -c base.sum"),
    ),
    safe=(
        guest("the COW file first", "ubd0=guest.cow,base.img", FSCK),
        sh("the backing file untouched", "sha256sum -c base.sum"),
    ),
)
