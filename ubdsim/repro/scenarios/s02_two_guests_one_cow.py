"""Two guests on one COW file under 2.4: the bitmap race keeps the data and loses its bit."""
from ..model import Scenario, guest, join, sh

_FILES = sh("a 1 MiB backing file of 'B' bytes, two sectors of 'A' and 'C', a COW file",
            "head -c 1048576 /dev/zero | tr '\\0' B > b.img && head -c 512 /dev/zero | tr '\\0' A > a.sec"
            " && head -c 512 /dev/zero | tr '\\0' C > c.sec && {ubdsim} mkcow --kernel {kernel} c.cow b.img")
# Guest A holds the device open (its bitmap is read once, at the open) until `go` exists.
_A = ("exec 3<{dev}; touch ready; while [ ! -e go ]; do sleep 0.1; done; "
      "dd if=a.sec of={dev} bs=512 seek=0 count=1 oflag=direct 2>/dev/null")
_READ1 = "dd if={dev} bs=512 skip=1 count=1 iflag=direct 2>/dev/null | head -c 16; echo"

SCENARIO = Scenario(
    name="two-guests-one-cow",
    title="two guests on one COW file (2.4): data present, bit lost",
    profiles=("2.4", "2.4-stock"),
    explain={"*": (
        "[2.4] ubd_open_dev() takes no host lock, so two kernels open one COW file, each "
        "with its own copy of the bitmap read at open. Guest B wrote sector 1 (data, then its "
        "bitmap word with bit 1); guest A, whose copy predates that, then wrote sector 0 and "
        "do_io()'s bitmap write-back (the two 32-bit words around the sector, from A's "
        "memory) cleared bit 1 on disk. Sector 1's data is still in the COW file but "
        "unmarked: the guest reads the backing file's 'B' there again, and `ubdsim check` "
        "reports the data without its bit. 6.1 refuses the second opener (F_SETLK). Safe: "
        "one COW file per guest.")},
    setup=(_FILES,),
    damage=(
        guest("guest A opens the COW file and waits", "ubd0=c.cow,b.img", _A, background="A"),
        guest("guest B writes sector 1 meanwhile", "ubd0=c.cow,b.img",
              "dd if=c.sec of={dev} bs=512 seek=1 count=1 oflag=direct 2>/dev/null"),
        sh("guest A may go on", "touch go"),
        join("guest A writes sector 0 and writes back its stale bitmap word", "A"),
        sh("check: sector 1's data is in the COW file, its bit is not", "{ubdsim} check c.cow",
           expect=3, shows=("leak",)),
        guest("a guest reads sector 1: the backing file's bytes again", "ubd0=c.cow,b.img", _READ1,
              shows=("BBBBBBBBBBBBBBBB",)),
    ),
    safe=(
        sh("a second COW file, one per guest", "{ubdsim} mkcow --kernel {kernel} d.cow b.img"),
        guest("guest A on c.cow waits", "ubd0=c.cow,b.img", _A, background="A"),
        guest("guest B writes sector 1 on its own d.cow", "ubd0=d.cow,b.img",
              "dd if=c.sec of={dev} bs=512 seek=1 count=1 oflag=direct 2>/dev/null"),
        sh("guest A may go on", "touch go"),
        join("guest A writes sector 0", "A"),
        sh("both COW files check clean", "{ubdsim} check c.cow && {ubdsim} check d.cow"),
        guest("guest B's sector 1 reads back", "ubd0=d.cow,b.img", _READ1,
              shows=("CCCCCCCCCCCCCCCC",)),
    ),
)
