"""Structured events: every step of the driver a kernel (or a user) could see.

The harness turns `message` events into the kernel log (`--log FILE`, texts exactly as the
kernel prints them); tracers and recorders use the I/O events. Emitting costs one `None`
check when nobody listens: code calls `events.emit(...)` only `if events.active`.

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
- flush     synced (file path fsynced, or None when the profile syncs nothing)
- close     file
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


class EventBus:
    """Fan-out of events to subscribers; `active` is False (and emitting free) with none."""

    __slots__ = ("_sinks", "active")

    def __init__(self, *sinks: EventSink) -> None:
        self._sinks: list[EventSink] = list(sinks)
        self.active = bool(self._sinks)

    def subscribe(self, sink: EventSink) -> Callable[[], None]:
        """Add a listener; returns a function that removes it again."""
        self._sinks.append(sink)
        self.active = True

        def unsubscribe() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)
            self.active = bool(self._sinks)
        return unsubscribe

    def emit(self, kind: str, unit: int | None, **data: Any) -> None:
        event = Event(kind, unit, data)
        for sink in tuple(self._sinks):
            sink(event)


def as_bus(events: "EventBus | EventSink | None") -> EventBus:
    """Accept a bus, a bare callable, or None (a silent bus)."""
    if isinstance(events, EventBus):
        return events
    return EventBus(events) if events is not None else EventBus()
