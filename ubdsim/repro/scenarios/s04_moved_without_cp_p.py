"""A backing file copied without `cp -p`, the HOWTO's `touch` fix, on a moved and on a
truly changed backing file."""
from ..model import Scenario, guest, sh
from ._common import EXT4_BASE, FSCK, OLD, cows

SCENARIO = Scenario(
    name="moved-without-cp-p",
    title="a move without cp -p, and the HOWTO's touch fix on a moved and on a changed backing",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={"*": (
        "A copy made without `cp -p` (to another disk and back, say) has the same bytes and a "
        "new mtime, so open_ubd_file()'s backing_file_mismatch() refuses it: 'mtime mismatch'. "
        "The HOWTO's fix, `touch -d @MTIME` with the header's mtime, makes the kernel accept the "
        "file: right when only the mtime changed, and with no check at all when the content "
        "changed too. Here the image was rebuilt (mkfs again, same name) and touched: the guest's "
        "COW sectors (superblock, bitmaps, inode table, root directory) now lie over another file "
        "system and e2fsck fails. Safe: `cp -p` keeps the mtime; for a file whose mtime is lost, "
        "`ubdsim rebase -b FILE COW` compares the sectors the COW file does not hold with the "
        "old backing file before it rewrites the header, and refuses a changed one.")},
    setup=(EXT4_BASE, sh("a COW file over it", cows("c.cow")),
           guest("the guest writes note.txt", "ubd0=c.cow,base.img",
                 "debugfs -w -R 'write f.txt note.txt' {dev}"),
           sh("keep the original aside", "cp -p base.img orig.img")),
    damage=(
        sh("moved without -p (a copy, renamed over the original)",
           "cp base.img moved.tmp && mv moved.tmp base.img"),
        guest("refused: mtime mismatch", "ubd0=c.cow,base.img", FSCK, expect=8,
              shows=(f"mtime mismatch ({OLD} vs ",)),
        sh("the HOWTO's touch fix", f"touch -d @{OLD} base.img"),
        guest("moved only: the fix works, the disk is clean", "ubd0=c.cow,base.img", FSCK),
        sh("now a truly changed backing file: rebuilt under the same name, and touched",
           f"mkfs.ext4 -q -F base.img && touch -d @{OLD} base.img"),
        guest("the kernel accepts it: the guest's file system is corrupt", "ubd0=c.cow,base.img",
              FSCK, expect=(4, 8, 12)),
    ),
    safe=(
        sh("moved with cp -p: the mtime travels with it", "cp -p base.img moved.tmp && mv moved.tmp base.img"),
        guest("opens, clean", "ubd0=c.cow,base.img", FSCK),
        sh("a copy elsewhere that lost its mtime: rebase compares it with the header's file "
           "first, then rewrites the header", "cp base.img moved.img && {ubdsim} rebase -b moved.img c.cow"),
        guest("the COW file over the moved copy: clean", "ubd0=c.cow,moved.img", FSCK),
        sh("a rebuilt image: rebase refuses (its content differs where the COW file holds "
           "nothing), nothing changed", "mkfs.ext4 -q -F new.img 8M && {ubdsim} rebase -b new.img c.cow",
           expect=1, shows=("differs from the old backing file",)),
    ),
)
