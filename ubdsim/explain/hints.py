"""`ubdsim: hint: ...` lines, printed when the device model does the damage explain predicts.

A listener on the device model's EventBus (ubdsim.device.events). Before the boot it works out
every unit's prediction (explain_parsed(): read-only, guarded; done before the device opens
anything, so no file it opens and closes can drop a lock the device holds: POSIX record
locks go with ANY close of the file by the process). Then it waits for the events:
- `switch`: when the prediction says the switch writes another header version over the old
  bitmap (6.1 over a V1/V2 file), how many bitmap bytes were overwritten and how many sectors
  of guest data are now unreachable, and the fix;
- `open` of a unit used raw although it is a COW file this kernel cannot read (2.4 and a V3
  file): said at once; then the first guest `write` that lands on the header says the header
  is gone (the listener asks for write events only while such a unit is open);
- `open` of a COW unit whose backing file is itself a COW file: what the guest sees;
- `resize` ([resize]): which kernels refuse the file from now on;
- a refused unit (size or mtime mismatch, unreadable header, a lock, a moved or missing
  backing file): the likely cause and the fix, once that unit's lines are all printed (at the
  next event of another unit, at an `open`, or at flush()).
Each hint is printed once. The kernel's own lines are never touched: hints go to their own
sink (`print_line`), after the kernel's lines of the same step. Subscribe the hints before the
sink that prints the kernel's lines, so that a pending hint is printed before the next unit's
first line (EventBus calls its sinks in subscription order).
"""
from __future__ import annotations

import sys
from collections.abc import Callable

from ..cmdline import ParseResult
from ..device.events import Event, EventBus
from ..doctor.findings import describe_runs
from ..errors import UbdError
from ..fileio import shown
from ..messages.device import UBDSIM_TEXTS
from ..profiles import PROFILES, Profile
from .mistakes import Mistake, profile_mistakes
from .options import add_hint_options
from .predict import NO_DISK, REFUSE, Step, UnitPrediction
from .report import explain_unit
from .sentences import sentence

PREFIX = "ubdsim: hint: "
KINDS = frozenset({"message", "open", "switch", "resize"})
_REFUSALS = ("refuse.size", "refuse.mtime", "refuse.header", "refuse.locked", "refuse.backing",
             "refuse.open", "refuse.vmalloc", "switch.failed", "create.failed", "create.readonly",
             "resize.refused", "size.none")


def to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _over_a_cow_file(prediction: UnitPrediction) -> bool:
    """Is the unit's backing file (the command line's, or its header's) a COW file?"""
    layers = list(prediction.files.get("backing", {}).get("layers", [])[:1])
    layers += prediction.files.get("file", {}).get("layers", [])[1:2]
    return any(layer["is_cow"] or layer["header_error"] for layer in layers)


def _find(prediction: UnitPrediction, behaviour: str) -> Step | None:
    return next((s for s in prediction.steps if s.behaviour == behaviour), None)


class Hints:
    """The listener (see the module docstring). `close()` unsubscribes it."""

    def __init__(self, bus: EventBus, profile: Profile, parsed: ParseResult,
                 print_line: Callable[[str], None], chain: bool = False) -> None:
        self.bus, self.profile, self.print_line = bus, profile, print_line
        self.predictions: dict[int, UnitPrediction] = {}
        for n, spec in parsed.units.items():
            try:
                prediction = explain_unit(spec, profile).prediction
            except (UbdError, OSError, ValueError):
                continue            # no prediction, no hint for this unit
            if chain and _over_a_cow_file(prediction):
                continue            # ubdsim's --chain reads it as layers: not the kernel's open
            self.predictions[n] = prediction
        self.mistakes: dict[int, list[Mistake]] = {}
        for m in profile_mistakes(parsed, profile, self.predictions):
            if m.unit is not None:
                self.mistakes.setdefault(m.unit, []).append(m)
        self.printed: set[str] = set()
        self.pending: dict[int, list[str]] = {}
        self.watched: dict[int, int] = {}       # raw units over a COW header: header bytes
        self._writes: Callable[[], None] | None = None
        self._unsubscribe = bus.subscribe(self._on_event, KINDS)

    # -- output ----------------------------------------------------------------------------
    def _say(self, unit: int | None, text: str) -> None:
        line = PREFIX + (f"unit {unit}: " if unit is not None else "") + text
        if line not in self.printed:
            self.printed.add(line)
            self.print_line(line)

    def flush(self, except_unit: int | None = None) -> None:
        """Print the hints held back until their unit's lines were all out."""
        for unit in sorted(self.pending):
            if unit != except_unit:
                for text in self.pending.pop(unit):
                    self._say(unit, text)

    def close(self) -> None:
        self.flush()
        self._stop_writes()
        self._unsubscribe()

    # -- events ----------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        unit = event.unit
        if unit is not None and any(u != unit for u in self.pending):
            self.flush(except_unit=unit)
        prediction = self.predictions.get(unit)
        if prediction is None:
            return
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(unit, prediction, event.data)

    def _fixes(self, unit: int, ids: tuple[str, ...] | None = None) -> list[str]:
        return [f"{m.text}; fix: {m.fix}" for m in self.mistakes.get(unit, [])
                if ids is None or m.id in ids]

    def _on_message(self, unit: int, prediction: UnitPrediction, data: dict) -> None:
        if prediction.outcome not in (REFUSE, NO_DISK) or unit in self.pending:
            return
        if data["msg_id"] not in prediction.line_ids + prediction.first_open_ids:
            return
        if data["msg_id"] in UBDSIM_TEXTS:
            return                          # the line is already ubdsim's own explanation
        texts = self._fixes(unit)
        if not texts:
            step = next((s for s in prediction.steps if s.behaviour in _REFUSALS), None)
            if step is None:
                return
            texts = [sentence(step, self.profile)]
        self.pending[unit] = texts

    def _on_switch(self, unit: int, prediction: UnitPrediction, data: dict) -> None:
        step = _find(prediction, "switch.damage")
        if step is None or step.data["new_version"] != data.get("version"):
            return
        fixes = self._fixes(unit, ("switch_destroys",))
        fix = fixes[0].split("; fix: ", 1)[1] if fixes else None
        d = step.data
        over = d["bitmap_bytes_overwritten"]
        where = (f" (bytes {d['old_bitmap_offset']}-{d['old_bitmap_offset'] + over - 1}, the bits "
                 f"of sectors 0-{over * 8 - 1})" if over else "")
        runs = (f" ({describe_runs([tuple(r) for r in d['unreachable_runs']])})"
                if d["unreachable_runs"] else "")
        text = (f"the switch wrote a V{d['new_version']} header over the V{d['old_version']} file "
                f"{shown(data['file'])}: {over} bytes of its bitmap overwritten{where}, "
                f"{d['unreachable']} of the {d['marked']} sectors of guest data now unreachable"
                f"{runs}, {d['misread']} other sectors now reading bytes that are not theirs (the "
                f"kernel reads the bitmap at {d['new_bitmap_offset']}, the data at "
                f"{d['new_data_offset']})")
        self._say(unit, text + (f"; fix: {fix}" if fix else ""))

    def _on_open(self, unit: int, prediction: UnitPrediction, data: dict) -> None:
        self.pending.pop(unit, None)        # it opened: no refusal to explain
        self.flush()
        raw = _find(prediction, "raw.unreadable_cow")
        if raw is not None and not data.get("cow"):
            texts = self._fixes(unit, ("cow_used_raw",)) or [sentence(raw, self.profile)]
            self._say(unit, texts[0])
            geometry = raw.data.get("geometry")
            if geometry:
                self.watched[unit] = geometry["header_bytes"]
                self._start_writes()
        stacked = _find(prediction, "stacking")
        if stacked is not None and data.get("cow"):
            texts = self._fixes(unit, ("backing_is_cow",)) or [sentence(stacked, self.profile)]
            self._say(unit, texts[0])

    def _on_resize(self, unit: int, prediction: UnitPrediction, data: dict) -> None:
        refusers = [name for name, p in PROFILES.items() if not p.device.accepts_grown_cow]
        self._say(unit, (
            f"{shown(data['file'])} now covers {data['new_size']} bytes (was {data['old_size']}): "
            f"from now on {', '.join(refusers)} and uml_moo refuse it (`Size mismatch`); "
            f"`ubdsim moo {shown(data['file'])} grown.img` merges it into the grown disk"))

    # -- the guest's writes to a raw unit that holds a COW header --------------------------
    def _start_writes(self) -> None:
        if self._writes is None:
            self._writes = self.bus.subscribe(self._on_write, {"write"})

    def _stop_writes(self) -> None:
        if self._writes is not None:
            self._writes()
            self._writes = None

    def _on_write(self, event: Event) -> None:
        header = self.watched.get(event.unit)
        if header is None:
            return
        data = event.data
        if data.get("target") != "raw" or data["file_offset"] >= header:
            return
        prediction = self.predictions[event.unit]
        end = min(header, data["file_offset"] + data["length"]) - 1
        self._say(event.unit, (
            f"the guest wrote bytes {data['file_offset']}-{end} of {shown(prediction.file)}, "
            f"inside its {header}-byte COW header: the file is no longer a COW file (its data "
            "stays where it was, but no tool will find its backing file or bitmap again)"))
        del self.watched[event.unit]
        if not self.watched:
            self._stop_writes()


def attach_hints(bus: EventBus, profile: Profile, parsed: ParseResult,
                 print_line: Callable[[str], None] = to_stderr, *, chain: bool = False) -> Hints:
    """Listen on `bus` for the units of `parsed` opened under `profile`; hints go to
    `print_line` (stderr by default). Attach before the boot, and before subscribing the
    sink that prints the kernel's lines. `chain`: the boot uses ubdsim's --chain, so units
    over a backing file that is a COW file get no hints (they are not opened as the kernel
    opens them)."""
    return Hints(bus, profile, parsed, print_line, chain)


__all__ = ["PREFIX", "Hints", "add_hint_options", "attach_hints", "to_stderr"]
