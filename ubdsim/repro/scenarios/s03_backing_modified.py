"""A backing file modified in place under the COW files made over it."""
from ..model import Scenario, guest, sh
from ._common import EXT4_BASE, FSCK, OLD, cows

_CHANGE = "printf 'mkdir d\\nwrite f.txt d/g.txt\\nrm f.txt\\n' | debugfs -w -f - {file} >/dev/null 2>&1"

SCENARIO = Scenario(
    name="backing-modified",
    title="a backing file modified under its COW files",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={"*": (
        "The COW header records the backing file's size and mtime; open_ubd_file() checks "
        "them through backing_file_mismatch() and refuses the unit ('mtime mismatch (%ld vs "
        "%ld) of COW header vs backing file', errno 22) once someone writes into the backing "
        "file. That refusal is the only protection: the sectors a COW file holds were written "
        "over the old content. Setting the mtime back (the HOWTO's `touch`) makes the kernel "
        "accept the pair with no check at all: a.cow's root directory, bitmaps and inode table "
        "now lie over a backing file whose directory and allocation changed, and e2fsck finds "
        "the link count wrong; b.cow, which wrote nothing, silently shows the new content. "
        "Safe: change a copy and make new COW files over it; the old ones keep their base.")},
    setup=(EXT4_BASE, sh("two COW files over it", cows("a.cow", "b.cow")),
           guest("guest A writes note.txt into its disk", "ubd0=a.cow,base.img",
                 "debugfs -w -R 'write f.txt note.txt' {dev}")),
    damage=(
        sh("someone changes base.img in place (a directory, a file moved)", _CHANGE.format(file="base.img")),
        guest("guest A: refused, the backing file's mtime changed", "ubd0=a.cow,base.img", FSCK,
              expect=8, shows=(f"mtime mismatch ({OLD} vs ",)),
        sh("check says why", "{ubdsim} check a.cow", expect=2, shows=("backing.mtime_mismatch",)),
        sh("the HOWTO's touch trick: the old mtime back", f"touch -d @{OLD} base.img"),
        guest("guest A's disk now mixes its sectors with the changed base: corrupt",
              "ubd0=a.cow,base.img", FSCK, expect=4, shows=("Inode 2 ref count",)),
        guest("guest B's disk shows the new content it never wrote", "ubd0=b.cow,base.img",
              "debugfs -R 'ls' {dev}", shows=(" d ",), hides=("f.txt",)),
    ),
    safe=(
        sh("change a copy instead", "cp --sparse=always base.img base2.img && "
           + _CHANGE.format(file="base2.img")),
        guest("guest A's disk still opens and is clean", "ubd0=a.cow,base.img",
              FSCK + " && debugfs -R 'cat note.txt' {dev} | tail -1", shows=("2000",)),
        sh("check: clean", "{ubdsim} check a.cow"),
        sh("new COW files go over the new base", "{ubdsim} mkcow --kernel {kernel} c.cow base2.img"),
        guest("and see the change", "ubd0=c.cow,base2.img", FSCK + " && debugfs -R 'ls' {dev}",
              shows=(" d ",)),
    ),
)
