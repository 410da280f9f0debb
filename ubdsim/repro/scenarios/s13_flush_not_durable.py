"""6.1: a guest's fsync reaches no host file, so a power cut loses fsync'd data; flag s keeps it."""
from ..model import Scenario, sh

_RUN = ("{{ubdsim}} run --kernel 6.1 --record L ubd0{flag}=c.cow,b.img -- sh -c "
        "'dd if=d.dat of=/dev/ubda bs=4k count=4 conv=fsync 2>/dev/null && {{ubdsim}} mark synced'")
_CRASH = "{ubdsim} crash L --model power --points marks --check 'cmp -n 16384 d.dat {device}'"

SCENARIO = Scenario(
    name="flush-not-durable",
    title="6.1 flush not durable: a power cut loses fsync'd data, flag s keeps it",
    profiles=("6.1",),
    explain={"6.1": (
        "[6.1] a guest flush is a request with no I/O descriptors, so do_io()'s flush branch "
        "never runs and no fsync/fdatasync reaches the host (measured with linux.uml: none at "
        "all); the guest's `conv=fsync` returns once the data is in the host's page cache. A "
        "power cut after the guest's fsync may still lose those writes: `ubdsim crash --model "
        "power` finds crash states, after the mark the guest set once fsync returned, where "
        "the data is not on the device. With flag s (ubd0s=) the files are opened O_SYNC "
        "(open_ubd_file()), every host write is durable when it returns, and no crash state "
        "loses anything.")},
    setup=(sh("a 1 MiB backing file and 16 KiB of data",
              "truncate -s 1M b.img && head -c 16384 /dev/urandom > d.dat"),),
    damage=(
        sh("record a guest that writes 16 KiB with conv=fsync, then sets a mark", _RUN.format(flag="")),
        sh("power cuts after the mark: states that lose the fsync'd data", _CRASH, expect=3,
           shows=("no host sync",)),
    ),
    safe=(
        sh("the same with flag s (O_SYNC)", _RUN.format(flag="s")),
        sh("no power-cut state loses it", _CRASH),
    ),
    oracle_steps=False,
)
