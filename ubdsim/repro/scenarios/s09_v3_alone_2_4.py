"""A V3 COW file named alone under 2.4: used raw, its header destroyed."""
from ..model import Scenario, guest, sh
from ._common import EXT4_BASE

SCENARIO = Scenario(
    name="v3-alone-2-4",
    title="a V3 COW file named alone under 2.4: used as a raw disk, header destroyed",
    profiles=("2.4", "2.4-stock"),
    explain={"*": (
        "[2.4] read_cow_header() knows versions 1 and 2 only; uml_mkcow writes V3. With no "
        "backing file on the command line ubd_open_dev() takes the unreadable header as 'not a "
        "COW file' and opens guest.cow itself as a raw disk (4 MiB of header and holes). The "
        "guest sees no file system there, makes one, and its first sectors overwrite the COW "
        "header and bitmap: guest.cow is no COW file any more and the guest's view of base.img "
        "is gone. Safe: make the COW file in the version the kernel reads (`ubdsim mkcow "
        "--kernel 2.4`: V2), or name the backing file (the open is then refused, nothing "
        "written).")},
    setup=(EXT4_BASE,),
    damage=(
        sh("uml_mkcow writes a V3 COW file", "uml_mkcow guest.cow base.img && {ubdsim} info guest.cow",
           shows=("version 3",)),
        guest("named alone under 2.4: the guest sees no file system on its disk",
              "ubd0=guest.cow", "e2fsck -fn {dev}", expect=8),
        guest("so it makes one: onto the COW file's header", "ubd0=guest.cow", "mkfs.ext4 -q -F {dev}"),
        sh("guest.cow is no COW file any more", "{ubdsim} check guest.cow", expect=63),
    ),
    safe=(
        sh("a V2 COW file, as 2.4 writes them", "{ubdsim} mkcow --kernel {kernel} guest.cow base.img"),
        guest("named alone: the COW file, over the header's backing file", "ubd0=guest.cow",
              "e2fsck -fn {dev} && debugfs -w -R 'mkdir mine' {dev}"),
        sh("still a COW file, clean", "{ubdsim} check guest.cow"),
    ),
)
