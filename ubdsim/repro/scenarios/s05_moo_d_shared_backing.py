"""`moo -d` (merge into the backing file in place) with several COW files over that backing."""
from ..model import Scenario, guest, sh
from ._common import EXT4_BASE, FSCK, OLD, cows

SCENARIO = Scenario(
    name="moo-d-shared-backing",
    title="uml_moo -d with several COW files over one backing file",
    profiles=("2.4", "2.4-stock", "6.1"),
    explain={"*": (
        "`uml_moo -d a.cow` writes a.cow's marked sectors into base.img in place: base.img is "
        "now a's disk, and its mtime changed. Every other COW file over base.img (b.cow) was "
        "made over the old content: open_ubd_file()'s backing_file_mismatch() refuses it "
        "('mtime mismatch'), and setting the mtime back lets a's sectors show through b's "
        "disk wherever b.cow holds nothing: b's disk changed without b writing. uml_moo does not know about the other COW files. Safe: merge into "
        "a new file (`ubdsim moo a.cow a.img`, or `uml_moo a.cow a.img`); `ubdsim info "
        "--summary *.cow` lists the COW files that share a backing file before any -d.")},
    setup=(EXT4_BASE, sh("two COW files over it", cows("a.cow", "b.cow")),
           guest("guest A writes note.txt", "ubd0=a.cow,base.img",
                 "debugfs -w -R 'write f.txt note.txt' {dev}"),
           guest("guest B makes a directory", "ubd0=b.cow,base.img", "debugfs -w -R 'mkdir bdir' {dev}"),
           sh("what guest B's disk is now, for comparing later", "{ubdsim} moo b.cow b-before.img >/dev/null")),
    damage=(
        sh("merge a.cow into base.img in place", "uml_moo -d a.cow"),
        guest("guest B: refused", "ubd0=b.cow,base.img", FSCK, expect=8,
              shows=(f"mtime mismatch ({OLD} vs ",)),
        sh("the touch trick", f"touch -d @{OLD} base.img"),
        sh("guest B's disk changed although B wrote nothing: a's sectors show through",
           "{ubdsim} compare b-before.img b.cow", expect=1),
    ),
    safe=(
        sh("which COW files share base.img", "{ubdsim} info --summary a.cow b.cow",
           shows=("a.cow", "b.cow")),
        sh("merge a.cow into a new image", "{ubdsim} moo a.cow a.img && e2fsck -fn a.img && "
           "debugfs -R 'cat note.txt' a.img | tail -1", shows=("2000",)),
        guest("guest B still opens, clean", "ubd0=b.cow,base.img", FSCK),
    ),
)
