"""The 2.4 COW-resize patch grew the file in place: interrupted, it leaves a corrupt file."""
from ..model import Scenario, guest, sh

_KILL = "{python} -m ubdsim.repro.interrupt c.cow 16M base.img --kill-before 4 --mode "

SCENARIO = Scenario(
    name="resize-interrupted",
    title="the resize patch done in place and interrupted (2.4)",
    profiles=("2.4",),
    explain={"2.4": (
        "[resize] the COW-resize patch grows a COW file when ubd0=cow,backing,SIZE asks for a "
        "larger device: the bigger bitmap pushes the data area further into the file, so the "
        "patch moved the data towards the end in place, last bytes first, then wrote the new "
        "bitmap and header. Until the header is written the file is read with the old geometry, "
        "over data that is partly moved: a crash in the middle (killed here half-way) leaves sectors that read other sectors' bytes, and e2fsck fails. ubdsim's own "
        "resize builds the grown file beside the old one, fsyncs it and renames it over: killed "
        "at the same step, the old file is intact; run again, it grows cleanly.")},
    setup=(sh("a 4 MiB ext4 backing file, a V2 COW file with the guest's writes",
              "truncate -s 4M base.img && mkfs.ext4 -q -F base.img && touch -d @1000000000 base.img && "
              "{ubdsim} mkcow --kernel 2.4 c.cow base.img && seq 100000 > f.txt"),
           guest("the guest writes a file", "ubd0=c.cow,base.img",
                 "debugfs -w -R 'write f.txt f.txt' {dev} && e2fsck -fn {dev}")),
    damage=(
        sh("the patch's in-place move to 16M, killed half-way (before its step 4)", _KILL + "in-place",
           expect=137),
        guest("the guest's disk, read with the old header over half-moved data",
              "ubd0=c.cow,base.img", "e2fsck -fn {dev}", expect=(4, 8, 12)),
    ),
    safe=(
        sh("ubdsim's resize killed at the same step", _KILL + "safe", expect=137),
        guest("the old file is intact", "ubd0=c.cow,base.img", "e2fsck -fn {dev}"),
        guest("grown for real (the patch's third field)", "ubd0=c.cow,base.img,16M",
              "e2fsck -fn {dev} && blockdev --getsize64 {dev}", shows=("16777216",)),
    ),
)
