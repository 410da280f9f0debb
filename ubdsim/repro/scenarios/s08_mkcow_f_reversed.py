"""`uml_mkcow -f` in the reversed order: the backing file becomes a COW file."""
from ..model import Scenario, sh
from ._common import EXT4_BASE, cows

SCENARIO = Scenario(
    name="mkcow-f-reversed",
    title="uml_mkcow -f base.img guest.cow: the backing file overwritten by a COW header",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={"*": (
        "uml_mkcow's argument order is COW file, then backing file, as in ubd0=cow,backing. "
        "Given in the posts' reversed order with -f (to get past 'file exists'), it opens "
        "base.img without O_EXCL and without truncating and writes a V3 header and a zero "
        "bitmap over its first sectors (write_cow_header() and the bitmap, as the kernel's "
        "create_cow_file() does): the ext4 superblock at byte 1024 is gone, e2fsck cannot open "
        "the image, and every COW file over base.img is lost with it. `ubdsim mkcow -f` refuses "
        "to overwrite a file that is not a COW file (unless --replace-non-cow), and never its "
        "own backing file.")},
    setup=(EXT4_BASE, sh("guest.cow over it", cows("guest.cow"))),
    damage=(
        sh("the reversed order with -f", "uml_mkcow -f base.img guest.cow"),
        sh("base.img is a COW file now", "{ubdsim} info base.img", shows=("COW file version 3", "guest.cow")),
        sh("its file system is gone", "e2fsck -fn base.img", expect=8),
    ),
    safe=(
        sh("ubdsim mkcow -f refuses the same words", "{ubdsim} mkcow -f base.img guest.cow",
           expect=1, shows=("not a COW file",)),
        sh("base.img is intact", "e2fsck -fn base.img"),
    ),
)
