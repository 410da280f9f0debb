"""The mailing list's stacking line `ubd0=a.cow,b.cow,base.img`, and a COW file used as a
backing file."""
from ..model import Scenario, guest, sh
from ._common import EXT4_BASE, FSCK, cows

_LINE = "ubd0=a.cow,b.cow,base.img"

SCENARIO = Scenario(
    name="stacking-line",
    title="the stacking line ubd0=a.cow,b.cow,base.img per profile, and a COW file as a backing file",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={
        "2.4": "[resize] ubd_setup() splits the value at its first comma (file a.cow), then the "
               "resize patch splits the rest once more: backing b.cow, size 'base.img', which is "
               "no number: the option is refused and unit 0 is not configured. No UML kernel "
               "ever stacked. And named as a backing file, b.cow is opened raw: the guest reads "
               "its COW header ('MOOO' magic, its path) as the disk's first sectors, which is "
               "not a file system. Safe: merge the lower COW file into an image first (`ubdsim "
               "moo b.cow b.img`) and put the top one over that.",
        "2.4-stock": "[2.4] ubd_setup() splits the value at its first comma only: the file is "
                     "a.cow and the backing file's name is 'b.cow,base.img', commas included: "
                     "no such file, so the open fails. No UML kernel ever stacked. Named as a "
                     "backing file, b.cow is opened raw and the guest reads its COW header "
                     "('MOOO') as data. Safe: merge the lower COW file first (`ubdsim moo b.cow "
                     "b.img`).",
        "6.1": "[6.1] ubd_setup_common() splits three fields with strsep(',' or ':'): file a.cow, "
               "backing b.cow, and 'base.img' as the unit's serial. b.cow becomes a's backing "
               "file and is read raw, as UML never stacks: the guest sees b.cow's COW header "
               "('MOOO' magic, backing path) as its disk's first sectors. Safe: merge the "
               "lower COW file first (`ubdsim moo b.cow b.img`) and make a.cow over that.",
    },
    setup=(EXT4_BASE, sh("b.cow over base.img", cows("b.cow")),
           guest("a guest writes into b.cow", "ubd0=b.cow,base.img", "debugfs -w -R 'mkdir bdir' {dev}")),
    damage=(
        sh("how the kernel parses the line", f"{{ubdsim}} parse --kernel {{kernel}} {_LINE}",
           expect=None),
        guest("the resize patch: third field is a size, the option is refused", _LINE,
              "test -b {dev}", expect=1, profiles=("2.4",)),
        guest("stock 2.4: the backing file is 'b.cow,base.img'", _LINE, FSCK, expect=8,
              profiles=("2.4-stock",)),
        guest("6.1: b.cow is a.cow's backing file, read raw: the header is the disk",
              _LINE, "dd if={dev} bs=4 count=1 2>/dev/null | od -An -c", shows=("O   O   O   M",),
              profiles=("6.1",)),
        sh("a COW file used as a backing file", "rm -f a.cow && {ubdsim} mkcow --kernel {kernel} a.cow b.cow"
           "; {ubdsim} check a.cow", shows=("backing.is_cow",), profiles=("2.4", "2.4-stock")),
        guest("the guest reads b.cow's header as data", "ubd0=a.cow,b.cow",
              "dd if={dev} bs=4 count=1 2>/dev/null | od -An -c", shows=("O   O   O   M",),
              profiles=("2.4", "2.4-stock")),
    ),
    safe=(
        sh("merge the lower layer into an image", "{ubdsim} moo b.cow b.img"),
        sh("the top COW file over the merged image", "{ubdsim} mkcow --kernel {kernel} a.cow b.img"),
        guest("the guest sees b's file system, clean", "ubd0=a.cow,b.img",
              FSCK + " && debugfs -R ls {dev}", shows=("bdir",)),
    ),
)
