"""Structured events: every step of the driver a kernel (or a user) could see.

The harness turns `message` events into the kernel log (`--log FILE`, texts exactly as the
kernel prints them); tracers and recorders use the I/O events. Emitting costs one `None`
check when nobody listens: code calls `events.emit(...)` only `if events.active`, and the
per-request kinds (IO_KINDS) only `if events.io_active`, which stays False while the only
listeners are ones that asked for other kinds (the harness's kernel log wants messages only;
a 1 MiB guest write would otherwise build 512 events nobody reads).

Kinds and their data (all offsets/lengths in bytes):
- message   msg_id, text                     a printk, in print order
- open      file, backing, readonly, sync, cow (bool), size
- create    file, backing, version
- switch    file, old_backing, new_backing, version
- resize    file, old_length, new_length, old_size, new_size
- read      source ("backing"|"cow"|"raw"), offset (device), file_offset, length
- write     target ("cow"|"raw"), offset (device), file_offset, length
- bitmap    file_offset, length, first_sector (a bitmap write-back)
- discard   file_offset, length, offset (device)
- zeroes    file_offset, length, offset (device)
- flush     (nothing: no profile's flush reaches the host, see Unit.flush())
- close     file
- request   op ("read"|"write"|"discard"|"zeroes"), offset (device), length, data (write:
            the guest's bytes, valid during the call only)   one guest request, before its steps
- hostwrite file, file_offset, data (the bytes, valid during the call only)   one pwrite of a
            unit's file, just after it returned (data area, bitmap words, raw file)
- sync      file                             a host fsync of a unit's file (no profile does
            one; `serve --flush fsync` does)
- fault     spec, call, host, file, file_offset, length, ...   a fault `--inject` made (lab/inject.py)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    kind: str
    unit: int | None
    data: dict[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]

# The kinds emitted once per request or segment: the hot path checks `io_active` for these.
IO_KINDS = frozenset({"read", "write", "bitmap", "discard", "zeroes", "flush", "request",
                      "hostwrite", "sync"})
# Delivered only to a subscriber that names them, not to one that asked for every kind: they
# carry the bytes of each request and host write, which only the lab's recorder wants.
OPT_IN_KINDS = frozenset({"request", "hostwrite"})


class EventBus:
    """Fan-out of events to subscribers.

    `active` is False (and emitting free) with no subscriber; `io_active` is False unless
    some subscriber wants I/O kinds. A subscriber may name the kinds it wants (None: all but
    OPT_IN_KINDS, which go only to those that name them).
    """

    __slots__ = ("_sinks", "active", "io_active", "injector")

    def __init__(self, *sinks: EventSink, kinds: frozenset[str] | set[str] | None = None) -> None:
        self._sinks: list[tuple[EventSink, frozenset[str] | None]] = []
        self.active = self.io_active = False
        self.injector = None            # ubdsim.lab.inject.Injector: consulted before host calls
        for sink in sinks:
            self.subscribe(sink, kinds)

    def subscribe(self, sink: EventSink, kinds: frozenset[str] | set[str] | None = None
                  ) -> Callable[[], None]:
        """Add a listener (for `kinds` only, or every kind); returns its unsubscriber."""
        entry = (sink, None if kinds is None else frozenset(kinds))
        self._sinks.append(entry)
        self._update()

        def unsubscribe() -> None:
            if entry in self._sinks:
                self._sinks.remove(entry)
            self._update()
        return unsubscribe

    def _update(self) -> None:
        self.active = bool(self._sinks)
        self.io_active = any(kinds is None or kinds & IO_KINDS for _, kinds in self._sinks)

    def emit(self, kind: str, unit: int | None, **data: Any) -> None:
        event = Event(kind, unit, data)
        for sink, kinds in tuple(self._sinks):
            if (kind not in OPT_IN_KINDS) if kinds is None else (kind in kinds):
                sink(event)


def as_bus(events: "EventBus | EventSink | None") -> EventBus:
    """Accept a bus, a bare callable, or None (a silent bus)."""
    if isinstance(events, EventBus):
        return events
    return EventBus(events) if events is not None else EventBus()
