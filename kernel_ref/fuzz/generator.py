"""Random fuzz programs from a seed: units of every kind, then guest operations on them.

Why these choices: the kernel's interesting edges are where sizes and offsets are odd, so
backing files are often not a multiple of 4 KiB or of 512 (the device rounds up to a whole
sector, ubd_kern.c ubd_file_size() [6.1], and a short pread of the last sector repeats
bytes, do_io()), positions are often relative to the device's end, and O_DIRECT requests
are usually aligned (so they reach the driver) but sometimes not (EINVAL from
blkdev_dio_unaligned()). Each program is `random.Random("SEED:INDEX")`'s alone, so any one
program can be made again from its name.

What is never generated, because linux.uml itself is not deterministic or not alive there
(ubd-behaviour.md, measured):
- a COW unit over a backing file of 32 KiB or less: writing to it hangs linux.uml (the
  bitmap write-back at word -1); backings here have at least MIN_COW_SECTORS sectors;
- a V1/V2 COW file whose sector count is not a multiple of 8: the rounding bug leaves the
  last sectors' bits in vmalloc memory the kernel never initialised (cow_sizes() [6.1]);
- an empty backing file (0-byte bitmap, `Failed to vmalloc COW bitmap`): one scenario
  covers it, a fuzz program on it only fails its opens.

`exclude` names op classes (OP_CLASSES) and unit features (FEATURES) to leave out, so a
batch can steer around a gap while it is open. Two features are not things but habits:
"buffered:unflushed" follows every buffered write on a descriptor without O_SYNC/O_DSYNC with
an fsync of it, so no dirty page-cache page outlives the write that made it (6.1 writes them
back at fsync, close, sync or O_DIRECT I/O on the range; so does ubdsim since its page cache
became write-back, and the fixed batch no longer excludes either habit). "buffered:sub-page" makes every buffered write whole
pages at a page-aligned offset (positioned: pwrite, pwritev), so no page is left partly
uptodate, which 6.1 later completes with block_read_full_folio() (fs/buffer.c) instead of a
readahead window: possible when the soft block size is below 4 KiB (a device size that is
not a multiple of 4 KiB, set_init_blocksize(), or BLKBSZSET).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .program import SECTOR, Program, Unit

PAGE = 4096
MIN_COW_SECTORS = 80                       # 40 KiB: above the 32 KiB write hang
MAX_SECTORS = 8192                         # 4 MiB: files stay small, boots stay fast

# op class -> weight; every generated operation belongs to one class
OP_CLASSES: dict[str, int] = {
    "rw": 30,          # pread64 / pwrite64
    "stream": 8,       # read / write at the file position, lseek
    "vector": 10,      # readv / writev / preadv / pwritev
    "flush": 8,        # fsync, fdatasync, sync
    "fadvise": 5,      # posix_fadvise, every advice
    "fallocate": 6,    # fallocate, every mode
    "discard": 7,      # BLKDISCARD, BLKZEROOUT, BLKSECDISCARD
    "ioctl-get": 8,    # BLKGETSIZE64 and friends
    "ioctl-set": 4,    # BLKFLSBUF, BLKBSZSET, BLKRASET, BLKROSET, BLKRRPART
    "reopen": 6,       # close, reopen, open another descriptor
}
# unit features that can be excluded: kinds, COW versions, flags, I/O paths
FEATURES = ("unit:mkcow", "unit:built", "unit:create", "unit:alone", "unit:raw",
            "version:1", "version:2", "version:3", "version:3-broken",
            "flag:r", "flag:s", "flag:c", "flag:t", "flag:d",
            "mode:direct", "mode:buffered", "size:odd",
            "buffered:unflushed", "buffered:sub-page")
_KIND_WEIGHTS = {"mkcow": 3, "built": 4, "create": 2, "alone": 1, "raw": 3}
_VERSION_WEIGHTS = {3: 4, 2: 3, 1: 2, "3-broken": 1}
_FLAG_CHANCE = {"r": 0.08, "s": 0.15, "c": 0.15, "t": 0.15}
GETTERS = ("BLKGETSIZE64", "BLKGETSIZE", "BLKSSZGET", "BLKPBSZGET", "BLKBSZGET", "BLKROGET",
           "BLKIOMIN", "BLKIOOPT", "BLKALIGNOFF", "BLKDISCARDZEROES", "BLKROTATIONAL",
           "BLKSECTGET", "BLKRAGET", "BLKFRAGET", "BLKGETZONESZ", "BLKGETNRZONES",
           "HDIO_GETGEO", "BOGUS")
# FALLOC_FL_*: 0 plain, 1 KEEP_SIZE, 2 PUNCH_HOLE alone, 3 PUNCH|KEEP, 7 PUNCH|KEEP|NO_HIDE,
# 8 COLLAPSE_RANGE, 0x10 ZERO_RANGE, 0x11 ZERO|KEEP, 0x20 INSERT_RANGE, 0x40 UNSHARE_RANGE
FALLOC_MODES = (0, 1, 2, 3, 3, 7, 8, 0x10, 0x10, 0x11, 0x20, 0x40)


@dataclass(frozen=True)
class Config:
    min_ops: int = 4
    max_ops: int = 20
    max_units: int = 3
    reboot_chance: float = 0.15
    exclude: frozenset[str] = field(default_factory=frozenset)


def _weighted(rng: random.Random, table: dict, exclude: frozenset[str], prefix: str = ""):
    items = [(k, w) for k, w in table.items() if f"{prefix}{k}" not in exclude]
    if not items:
        raise ValueError(f"everything of {sorted(table)} is excluded")
    return rng.choices([k for k, _ in items], [w for _, w in items])[0]


def generate(seed: str, config: Config = Config()) -> Program:
    rng = random.Random(seed)
    units = [_unit(rng, i, config) for i in range(rng.randint(1, config.max_units))]
    boots = [_boot(rng, 1, units, config)]
    if rng.random() < config.reboot_chance:
        boots.append(_boot(rng, 2, units, config))
    return Program(name=seed, units=units, boots=boots)


# ---- units ---------------------------------------------------------------------------------

def _size(rng: random.Random, kind: str, version, config: Config) -> int:
    if kind == "raw" and rng.random() < 0.15:
        low = 1
        sectors = rng.randint(1, 16)
    else:
        low = MIN_COW_SECTORS
        sectors = rng.choice([rng.randint(low, 300), rng.randint(300, 2100),
                              rng.randint(2100, MAX_SECTORS)])
    if rng.random() < 0.3:
        sectors = -(-sectors // 8) * 8                              # whole pages
    if version in (1, 2):
        sectors = -(-sectors // 8) * 8       # no rounding-bug sectors (see the docstring)
    tail = 0
    if "size:odd" not in config.exclude and rng.random() < 0.35:
        tail = rng.randint(1, SECTOR - 1)                            # a partial last sector
    return max(low * SECTOR - tail, sectors * SECTOR - tail, 1)


def _runs(rng: random.Random, sectors: int, most: int) -> list[list[int]]:
    runs = []
    for _ in range(rng.randint(0, most)):
        first = rng.randrange(sectors)
        count = min(rng.choice([1, 2, 3, 8, 9, 16, 64]), sectors - first)
        runs.append([first, count])
    return runs


def _unit(rng: random.Random, index: int, config: Config) -> Unit:
    ex = config.exclude
    kind = _weighted(rng, _KIND_WEIGHTS, ex, "unit:")
    version = _weighted(rng, _VERSION_WEIGHTS, ex, "version:") if kind == "built" else 3
    size = _size(rng, kind, version, config)
    unit = Unit(kind=kind, size=size, version=version)
    unit.fill = rng.choices(["pattern", "zero", "sparse"], [7, 1.5, 1.5])[0]
    if kind == "built":
        sectors = -(-size // SECTOR)
        unit.alignment = 512 if version not in (1, 2) and rng.random() < 0.2 else 4096
        unit.written = _runs(rng, sectors, 4)
        unit.bitmap_only = _runs(rng, sectors, 2)
    flags = [f for f, chance in _FLAG_CHANCE.items()
             if f"flag:{f}" not in ex and rng.random() < chance]
    if "flag:d" not in ex and rng.random() < (0.25 if kind == "raw" else 0.02):
        flags.append("d")
    rng.shuffle(flags)
    unit.flags = "".join(flags)
    unit.sep = ":" if rng.random() < 0.15 else ","
    return unit


# ---- operations ----------------------------------------------------------------------------

class _State:
    """What the generator knows while it writes one boot: open slots, their unit and flags."""

    def __init__(self, rng: random.Random, boot: int, units: list[Unit], config: Config):
        self.rng, self.boot, self.units, self.config = rng, boot, units, config
        self.slots: dict[int, tuple[int, list[str]]] = {}
        self.ops: list[dict] = []

    def size(self, slot: int) -> int:
        return self.units[self.slots[slot][0]].device_size

    def direct(self, slot: int) -> bool:
        return "O_DIRECT" in self.slots[slot][1]

    def tag(self) -> str:
        return f"W{self.boot}.{len(self.ops) + 1}"

    def wrote(self, slot: int) -> None:
        """After a write op: with "buffered:unflushed" excluded, fsync a buffered,
        non-synchronous descriptor at once (see the module docstring)."""
        flags = self.slots[slot][1]
        if "buffered:unflushed" in self.config.exclude and "O_DIRECT" not in flags \
                and "O_SYNC" not in flags and "O_DSYNC" not in flags:
            self.ops.append({"op": "fsync", "slot": slot})


def _boot(rng: random.Random, boot: int, units: list[Unit], config: Config) -> list[dict]:
    state = _State(rng, boot, units, config)
    _open(state, 0)
    for _ in range(rng.randint(config.min_ops, config.max_ops) - 1):
        if not state.slots:
            _open(state, rng.randrange(3))
            continue
        cls = _weighted(rng, OP_CLASSES, config.exclude)
        _MAKERS[cls](state, rng.choice(sorted(state.slots)))
    return state.ops


def _open_flags(state: _State) -> list[str]:
    rng, ex = state.rng, state.config.exclude
    access = rng.choices(["O_RDWR", "O_RDONLY", "O_WRONLY"], [7, 1.5, 1.5])[0]
    flags = [access]
    direct = rng.random() < 0.45
    if "mode:direct" in ex:
        direct = False
    if "mode:buffered" in ex:
        direct = True
    if direct:
        flags.append("O_DIRECT")
    for flag, chance in (("O_SYNC", 0.12), ("O_DSYNC", 0.05), ("O_EXCL", 0.05)):
        if rng.random() < chance:
            flags.append(flag)
    return flags


def _open(state: _State, slot: int) -> None:
    unit = state.rng.randrange(len(state.units))
    flags = _open_flags(state)
    state.ops.append({"op": "open", "slot": slot, "unit": unit, "flags": flags})
    state.slots[slot] = (unit, flags)


def _align(state: _State, slot: int) -> int:
    """The alignment of this request's offset and length: 512 or 4096 mostly for O_DIRECT
    (else EINVAL), often for buffered I/O, 1 (any byte) otherwise."""
    rng = state.rng
    if state.direct(slot):
        return rng.choices([SECTOR, PAGE, 1], [6, 3, 1])[0]
    return rng.choices([SECTOR, PAGE, 1], [3, 2, 5])[0]


def _position(rng: random.Random, size: int, align: int) -> list:
    r = rng.random()
    if r < 0.25:                                                    # near the end
        deltas = [-align * k for k in (1, 2, 3, 8)] + [0, align, -PAGE]
        if align == 1:
            deltas += [-1, -100, -511, -513, -4095]
        return ["end", rng.choice(deltas)]
    if r < 0.35:
        return ["start", 0]
    return ["start", rng.randrange(max(size, 1)) // align * align]


def _length(rng: random.Random, align: int) -> int:
    r = rng.random()
    if r < 0.02:
        return 0
    if r < 0.05:
        return 256 * 1024
    if align > 1:
        return align * rng.choice([1, 1, 2, 3, 7, 8, 9, 15, 16, 17, 64, 128])
    return rng.choice([1, 100, 511, 513, 1000, 4095, 4097, rng.randint(1, 20000)])


def _misalign(state: _State, slot: int) -> int:
    return state.rng.choice([1, 8, 256]) if state.direct(slot) and state.rng.random() < 0.05 else 0


def _rw(state: _State, slot: int) -> None:
    rng = state.rng
    align = _align(state, slot)
    op = {"op": rng.choice(["pread", "pwrite"]), "slot": slot,
          "at": _position(rng, state.size(slot), align), "len": _length(rng, align),
          "misalign": _misalign(state, slot)}
    if op["op"] == "pwrite":
        op["tag"] = state.tag()
        _emit_write(state, slot, op)
    else:
        state.ops.append(op)


def _stream(state: _State, slot: int) -> None:
    rng = state.rng
    align = _align(state, slot)
    if rng.random() < 0.4:
        whence = rng.choice(["SET", "SET", "CUR", "END", "DATA", "HOLE"])
        if whence in ("CUR", "END"):
            at = ["start", rng.choice([0, -align, align, 2 * align, -4 * align, 4096])]
        else:
            at = _position(rng, state.size(slot), align)
        state.ops.append({"op": "lseek", "slot": slot, "at": at, "whence": whence})
        return
    op = {"op": rng.choice(["read", "write"]), "slot": slot, "len": _length(rng, align),
          "misalign": _misalign(state, slot)}
    if op["op"] == "write":
        op["tag"] = state.tag()
        _emit_write(state, slot, op)
    else:
        state.ops.append(op)


def _vector(state: _State, slot: int) -> None:
    rng = state.rng
    align = _align(state, slot)
    name = rng.choice(["readv", "writev", "preadv", "pwritev"])
    segs = [_length(rng, align) for _ in range(rng.randint(1, 4))]
    op = {"op": "readv" if "read" in name else "writev", "slot": slot, "segs": segs,
          "misalign": _misalign(state, slot)}
    if name.startswith("p"):
        op["at"] = _position(rng, state.size(slot), align)
    if "write" in name:
        op["tag"] = state.tag()
        _emit_write(state, slot, op)
    else:
        state.ops.append(op)


def _emit_write(state: _State, slot: int, op: dict) -> None:
    """Append a write op, keeping the habits the config asks for (module docstring)."""
    rng = state.rng
    if "buffered:sub-page" in state.config.exclude and not state.direct(slot):
        op["at"] = ["start", rng.randrange(max(1, state.size(slot) // PAGE)) * PAGE]
        if "segs" in op:
            op["segs"] = [PAGE * rng.choice([1, 2, 3, 8]) for _ in op["segs"]]
        else:
            op["len"] = PAGE * rng.choice([1, 1, 2, 3, 8, 16])
        if op["op"] == "write":
            op["op"] = "pwrite"
    state.ops.append(op)
    state.wrote(slot)


def _flush(state: _State, slot: int) -> None:
    name = state.rng.choice(["fsync", "fdatasync", "sync"])
    state.ops.append({"op": name} if name == "sync" else {"op": name, "slot": slot})


def _fadvise(state: _State, slot: int) -> None:
    rng = state.rng
    advice = rng.choice([0, 1, 2, 3, 4, 5, 4, 4]) if rng.random() > 0.05 else 6
    length = rng.choice([0, _length(rng, _align(state, slot)), -1 if rng.random() < 0.1 else 0])
    state.ops.append({"op": "fadvise", "slot": slot, "advice": advice, "len": length,
                      "at": _position(rng, state.size(slot), _align(state, slot))})


def _fallocate(state: _State, slot: int) -> None:
    rng = state.rng
    align = rng.choices([SECTOR, PAGE, 1], [5, 3, 1])[0]
    state.ops.append({"op": "fallocate", "slot": slot, "mode": rng.choice(FALLOC_MODES),
                      "at": _position(rng, state.size(slot), align),
                      "len": max(_length(rng, align), rng.choice([0, 1]) * align)})


def _discard(state: _State, slot: int) -> None:
    rng = state.rng
    align = rng.choices([SECTOR, PAGE, 1], [5, 3, 1])[0]
    name = rng.choices(["BLKDISCARD", "BLKZEROOUT", "BLKSECDISCARD"], [5, 5, 1])[0]
    state.ops.append({"op": "ioctl", "slot": slot, "name": name,
                      "at": _position(rng, state.size(slot), align), "len": _length(rng, align)})


def _ioctl_get(state: _State, slot: int) -> None:
    state.ops.append({"op": "ioctl", "slot": slot, "name": state.rng.choice(GETTERS)})


def _ioctl_set(state: _State, slot: int) -> None:
    rng = state.rng
    name = rng.choices(["BLKFLSBUF", "BLKBSZSET", "BLKRASET", "BLKROSET", "BLKRRPART"],
                       [5, 2, 2, 1, 1])[0]
    op = {"op": "ioctl", "slot": slot, "name": name}
    if name == "BLKBSZSET":
        op["arg"] = rng.choice([512, 1024, 2048, 4096, 8192, 1000])
    elif name == "BLKRASET":
        op["arg"] = rng.choice([0, 8, 128, 256, 1024])
    elif name == "BLKROSET":
        op["arg"] = rng.choice([0, 1])
    state.ops.append(op)


def _reopen(state: _State, slot: int) -> None:
    rng = state.rng
    r = rng.random()
    if r < 0.3:
        state.ops.append({"op": "close", "slot": slot})
        del state.slots[slot]
    elif r < 0.7:
        state.ops.append({"op": "reopen", "slot": slot})
    else:
        free = [s for s in range(3) if s not in state.slots]
        if free:
            _open(state, rng.choice(free))
        else:
            state.ops.append({"op": "reopen", "slot": slot})


_MAKERS = {"rw": _rw, "stream": _stream, "vector": _vector, "flush": _flush,
           "fadvise": _fadvise, "fallocate": _fallocate, "discard": _discard,
           "ioctl-get": _ioctl_get, "ioctl-set": _ioctl_set, "reopen": _reopen}


def respects(program: Program, config: Config) -> bool:
    """Does `program` keep the habits `config` excludes their absence of? The shrinker asks,
    so that a program shrunk from an excluding batch stays one that batch could make (no
    fsync dropped after a buffered write, no buffered write made smaller than a page)."""
    for ops in program.boots:
        slots: dict[int, list[str]] = {}
        for k, op in enumerate(ops):
            if op["op"] == "open":
                slots[op["slot"]] = op["flags"]
            elif op["op"] == "close":
                slots.pop(op["slot"], None)
            flags = slots.get(op.get("slot", -1))
            if "buffered:unflushed" in config.exclude and flags is not None \
                    and op["op"] in ("pwrite", "write", "writev") \
                    and not {"O_DIRECT", "O_SYNC", "O_DSYNC"} & set(flags):
                after = ops[k + 1] if k + 1 < len(ops) else {}
                if after.get("op") != "fsync" or after.get("slot") != op["slot"]:
                    return False
            if "buffered:sub-page" in config.exclude and flags is not None \
                    and op["op"] in ("pwrite", "write", "writev") and "O_DIRECT" not in flags:
                lengths = op.get("segs") or [op.get("len", 0)]
                at = op.get("at", ["end", 1])
                if at[0] != "start" or at[1] % PAGE or any(n % PAGE for n in lengths):
                    return False
    return True
