"""Shrinking a disagreeing program to a minimal one, re-running both sides at every step.

Why this way (delta debugging, as in Zeller's ddmin and hypothesis' shrinker): a fuzz
program that disagrees carries many operations and units that have nothing to do with the
difference; the scenario worth keeping is the smallest program that still shows it. Every
candidate is judged for real on both sides (no model of which operation matters), and a
candidate counts only when it still disagrees in the SAME category as the original
(verdict.py), so the shrinker never slips from one gap to another.

Passes, each repeated while it succeeds, all of them until none does or the run budget is
spent: drop a boot; drop chunks of operations (halves, quarters, ..., single ones); drop a
unit (later units renumbered, opens of it removed); simplify a unit (flags, pre-existing
runs, kind, version, alignment, separator, the partial sector, half the size); simplify an
operation (buffer misalignment, length, segments, position, open flags). Candidates are
judged two at a time (batch.Pool); the first that still disagrees, in order, is taken.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from .batch import Pool
from .execute import Judgement
from .generator import MIN_COW_SECTORS
from .program import SECTOR, Program

Candidates = Iterator[tuple[str, Program]]


CONFIRM = 2          # re-runs a disagreement must survive, before and after shrinking


@dataclass
class Shrunk:
    original: Judgement
    minimal: Judgement
    target: str                          # the category kept all along
    runs: int = 0
    reproduced: bool = True              # the original disagreed again, every re-run
    kernel_varies: list[str] = field(default_factory=list)  # linux.uml vs linux.uml diffs
    minimal_confirmed: bool = True       # the minimal program disagreed again, every re-run
    steps: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.kernel_varies:
            return "linux.uml varies"
        if not self.reproduced:
            return "not reproduced"
        return "shrunk" if self.minimal_confirmed else "shrunk, minimal flaky"


def shrink(pool: Pool, found: Judgement, budget: int = 60,
           progress: Callable[[int, str], None] | None = None,
           allowed: Callable[[Program], bool] | None = None) -> Shrunk:
    """The smallest program found within `budget` judgements that still disagrees with the
    category `found` started with (found.categories[0]).

    First the original is judged CONFIRM more times, and linux.uml once against itself: a
    program on which the kernel does not repeat itself (its page-cache write-back timing,
    say) is reported as such and not shrunk, since no candidate's verdict would mean
    anything; one that does not disagree every time is "not reproduced". Candidates
    `allowed` refuses (generator.respects() of the batch's exclusions) are never run."""
    target = found.categories[0]
    result = Shrunk(found, found, target)

    def still(j: Judgement) -> bool:
        return not j.agree and target in j.categories

    kernel = pool.first
    self_check = pool.submit(found.program, sides=(kernel, kernel))
    again = [pool.submit(found.program) for _ in range(CONFIRM)]
    result.kernel_varies = self_check.result().diffs
    judged = [f.result() for f in again]
    result.runs += 1 + CONFIRM
    if result.kernel_varies or not all(still(j) for j in judged):
        result.reproduced = all(still(j) for j in judged)
        return result
    result.minimal = judged[0]
    changed = True
    while changed and result.runs < budget:
        changed = False
        hints: dict = {}                 # what a pass learnt this round (drop_ops' chunk)
        for make in PASSES:
            while result.runs < budget:
                candidates = ((what, c) for what, c in make(result.minimal.program, hints)
                              if allowed is None or allowed(c))
                accepted = _first_accepted(pool, candidates, still, result, budget)
                if accepted is None:
                    break
                what, judgement = accepted
                result.minimal = judgement
                result.steps.append(what)
                changed = True
                if progress is not None:
                    progress(result.runs, what)
    if result.minimal is not judged[0]:
        confirm = [pool.submit(result.minimal.program) for _ in range(CONFIRM)]
        result.minimal_confirmed = all(still(f.result()) for f in confirm)
        result.runs += CONFIRM
    return result


def _first_accepted(pool: Pool, candidates: Candidates, still, result: Shrunk, budget: int
                    ) -> tuple[str, Judgement] | None:
    batch: list[tuple[str, Program]] = []
    for item in candidates:
        batch.append(item)
        if len(batch) == 2:
            found = _judge_batch(pool, batch, still, result)
            if found is not None:
                return found
            batch = []
        if result.runs + len(batch) >= budget:
            break
    if batch and result.runs < budget:
        return _judge_batch(pool, batch, still, result)
    return None


def _judge_batch(pool: Pool, batch, still, result: Shrunk):
    futures = [(what, pool.submit(program)) for what, program in batch]
    judged = [(what, future.result()) for what, future in futures]
    result.runs += len(judged)
    for what, judgement in judged:
        if still(judgement):
            return what, judgement
    return None


# ---- passes -------------------------------------------------------------------------------

def drop_boots(p: Program, hints: dict) -> Candidates:
    if len(p.boots) > 1:
        for b in range(len(p.boots)):
            c = p.copy()
            del c.boots[b]
            yield f"dropped boot {b + 1}", c


def drop_ops(p: Program, hints: dict) -> Candidates:
    """Chunks of operations, largest first; after a chunk went, the next call starts at that
    chunk's size (hints["chunk"]), not at the largest again, which would fail again."""
    for b, ops in enumerate(p.boots):
        size = min(len(ops) // 2, hints.get(("chunk", b), len(ops)))
        while size >= 1:
            for start in range(0, len(ops), size):
                c = p.copy()
                del c.boots[b][start:start + size]
                if c.boots[b]:
                    hints[("chunk", b)] = size
                    yield f"dropped ops {start + 1}-{min(start + size, len(ops))} of boot {b + 1}", c
            size //= 2


def drop_units(p: Program, hints: dict) -> Candidates:
    if len(p.units) < 2:
        return
    for u in range(len(p.units)):
        c = p.copy()
        del c.units[u]
        for ops in c.boots:
            ops[:] = [op for op in ops if not (op["op"] == "open" and op["unit"] == u)]
            for op in ops:
                if op["op"] == "open" and op["unit"] > u:
                    op["unit"] -= 1
        if all(c.boots):
            yield f"dropped unit {u}", c


def simplify_units(p: Program, hints: dict) -> Candidates:
    for u, unit in enumerate(p.units):
        def edited(what: str, change) -> tuple[str, Program]:
            c = p.copy()
            change(c.units[u])
            return f"unit {u}: {what}", c

        for flag in dict.fromkeys(unit.flags):
            yield edited(f"flag {flag} dropped",
                         lambda x, f=flag: setattr(x, "flags", x.flags.replace(f, "")))
        if unit.written:
            yield edited("no pre-existing data", lambda x: setattr(x, "written", []))
        if unit.bitmap_only:
            yield edited("no bits without data", lambda x: setattr(x, "bitmap_only", []))
        for i in range(len(unit.written)):
            yield edited(f"pre-existing run {i} dropped", lambda x, i=i: x.written.pop(i))
        if unit.kind == "built" and not unit.written and not unit.bitmap_only \
                and unit.version == 3 and unit.alignment == 4096:
            yield edited("uml_mkcow file", lambda x: setattr(x, "kind", "mkcow"))
        if unit.kind == "built" and unit.version != 3 and -(-unit.size // SECTOR) % 8 == 0:
            yield edited("version 3", lambda x: setattr(x, "version", 3))
        if unit.kind == "built" and unit.alignment != 4096:
            yield edited("alignment 4096", lambda x: setattr(x, "alignment", 4096))
        if unit.sep != ",":
            yield edited("',' separator", lambda x: setattr(x, "sep", ","))
        if unit.size % SECTOR:
            yield edited("whole last sector",
                         lambda x: setattr(x, "size", -(-x.size // SECTOR) * SECTOR))
        for smaller in dict.fromkeys((_floor_size(unit), _half_size(unit))):
            if smaller is not None:
                yield edited(f"size {smaller}", lambda x, s=smaller: _resize(x, s))


def _floor_size(unit) -> int | None:
    """The smallest size the generator could have chosen (the floor first: one run instead
    of a halving ladder when the size does not matter)."""
    low = 1 if unit.kind == "raw" else MIN_COW_SECTORS
    size = low * SECTOR - (-unit.size % SECTOR)
    return size if 0 < size < unit.size else None


def _half_size(unit) -> int | None:
    sectors = -(-unit.size // SECTOR)
    low = 1 if unit.kind == "raw" else MIN_COW_SECTORS
    half = max(low, sectors // 2)
    if unit.kind == "built" and unit.version in (1, 2):
        half = -(-half // 8) * 8
    if half >= sectors:
        return None
    return half * SECTOR - (-unit.size % SECTOR)


def _resize(unit, size: int) -> None:
    sectors = -(-size // SECTOR)
    unit.size = size
    unit.written = [[a, min(n, sectors - a)] for a, n in unit.written if a < sectors]
    unit.bitmap_only = [[a, min(n, sectors - a)] for a, n in unit.bitmap_only if a < sectors]


def _smaller_lengths(n: int) -> list[int]:
    """The least length of the same alignment first, then half of `n`."""
    least = SECTOR if n % SECTOR == 0 else 1
    half = _smaller_length(n)
    return [m for m in dict.fromkeys((least, half)) if m is not None and m < n]


def _smaller_length(n: int) -> int | None:
    if n <= 1:
        return None
    if n % SECTOR == 0:
        half = n // 2 // SECTOR * SECTOR
        return half if half >= SECTOR else None
    return max(1, n // 2)


def _op_variants(op: dict) -> Iterator[tuple[str, dict]]:
    if op.get("misalign"):
        yield "aligned buffer", {**op, "misalign": 0}
    if op.get("len", 0) > 0:
        for smaller in _smaller_lengths(op["len"]):
            yield f"length {smaller}", {**op, "len": smaller}
    segs = op.get("segs")
    if segs and len(segs) > 1:
        for i in range(len(segs)):
            yield f"segment {i} dropped", {**op, "segs": segs[:i] + segs[i + 1:]}
    if segs:
        for i, n in enumerate(segs):
            for smaller in _smaller_lengths(n):
                yield f"segment {i} length {smaller}", \
                    {**op, "segs": segs[:i] + [smaller] + segs[i + 1:]}
    if "at" in op and op["at"][1] != 0:
        anchor, delta = op["at"]
        yield "position 0 from its anchor", {**op, "at": [anchor, 0]}
        if anchor == "start" and delta % SECTOR == 0 and delta >= 2 * SECTOR:
            yield "position halved", {**op, "at": [anchor, delta // 2 // SECTOR * SECTOR]}
    if op["op"] == "open":
        for flag in op["flags"][1:]:
            yield f"open without {flag}", {**op, "flags": [f for f in op["flags"] if f != flag]}
        if op["flags"][0] != "O_RDWR":
            yield "open O_RDWR", {**op, "flags": ["O_RDWR"] + op["flags"][1:]}


def simplify_ops(p: Program, hints: dict) -> Candidates:
    for b, ops in enumerate(p.boots):
        for k, op in enumerate(ops):
            for what, variant in _op_variants(op):
                c = p.copy()
                c.boots[b][k] = variant
                yield f"op {k + 1} of boot {b + 1}: {what}", c


PASSES = (drop_boots, drop_ops, drop_units, simplify_units, simplify_ops)
