"""The bus listener: device events in, lab records out (to a log, a trace, or both).

One Recorder turns each event into one record (docs/lab-log-format.md) and hands it to its
sinks: a LogSink (the `--record` file, payloads included) and/or a trace sink (`--trace`:
text or JSON lines, no payloads). Both see the same records, so a trace line and a log
record never disagree. The recorder subscribes for every kind, which turns the bus's
`io_active` on: that is what it costs, and only when asked for (`attach_recorder`).

Host-file state the events do not carry (the bytes a creation, a switch or a resize left
in the COW file, a unit's geometry) is read from the file at the event, through
hostfiles.borrowed_fd(), so the device's fcntl locks stay where they are.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..cmdline.spec import UnitSpec
from ..cow.header import read_header
from ..cow.layouts import HEADER_READ_SIZE
from ..device.api import SECTOR_SIZE
from ..device.events import Event, EventBus
from ..errors import CowFormatError, UbdError
from ..fileio import open_log
from . import hostfiles
from .logformat import MAGIC, VERSION, LogWriter

Sink = Callable[[dict[str, Any], "bytes | memoryview | None"], None]
HASH_HEX = 32        # request data hash: sha256, first 128 bits, hex
# Every kind the recorder turns into a record (the opt-in `request` and `hostwrite` too).
RECORDED_KINDS = frozenset({"message", "create", "switch", "resize", "open", "close", "request",
                            "hostwrite", "write", "bitmap", "read", "discard", "zeroes", "flush",
                            "sync", "fault"})


def data_hash(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_HEX]


def geometry_record(path: str) -> dict[str, int] | None:
    """The COW geometry of `path` as the log keeps it (None: not a readable COW file)."""
    head = hostfiles.read_range(path, 0, HEADER_READ_SIZE)
    try:
        g = read_header(head).geometry()
    except (CowFormatError, UbdError):
        return None
    return {"v": g.version, "ss": g.sectorsize, "bo": g.bitmap_offset, "bl": g.bitmap_len,
            "do": g.data_offset, "size": g.size}


class FileTable:
    """File ids: every path a record names is a small integer, its entry in the header."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._ids: dict[str, int] = {}

    def add(self, path: str, role: str | None, *, start: bool) -> tuple[int, bool]:
        """(id, is_new) of `path`; a new entry gets the file's identity now."""
        key = os.path.abspath(path)
        if key in self._ids:
            fid = self._ids[key]
            if role and role not in self.entries[fid]["roles"]:
                self.entries[fid]["roles"].append(role)
            return fid, False
        fid = len(self.entries)
        entry = {"f": fid, "path": key, "given": path, "roles": [role] if role else []}
        entry.update(hostfiles.identity(path))
        if not start:
            entry["seen"] = "later"
        self.entries.append(entry)
        self._ids[key] = fid
        return fid, True

    def id_of(self, path: str) -> int | None:
        return self._ids.get(os.path.abspath(path))


class Recorder:
    """A bus listener that writes one record per event to its sinks (thread-safe: marks
    arrive from the mark server's thread)."""

    def __init__(self, files: FileTable, sinks: list[Sink], header: dict[str, Any]) -> None:
        self.files = files
        self.sinks = sinks
        self.header = header
        self.writes = 0                         # host writes so far (the last `w`)
        self.units: dict[int, dict[str, Any]] = {}
        self.written: set[int] = set()
        self.mark_names: set[str] = set()
        self._by_name: dict[str, int] = {}      # paths as events give them (cwd never changes)
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self.closed = False
        self._handlers = {kind: getattr(self, "_on_" + kind) for kind in RECORDED_KINDS}
        self._emit(header, None)

    # -- plumbing ------------------------------------------------------------------------
    def _emit(self, record: dict[str, Any], payload: bytes | memoryview | None) -> None:
        if payload is not None:
            record["n"] = len(payload)
        for sink in self.sinks:
            sink(record, payload)

    def _file(self, path: str) -> int:
        fid = self._by_name.get(path)
        if fid is not None:
            return fid
        fid = self._by_name[path] = self._new_file(path)
        return fid

    def _new_file(self, path: str) -> int:
        fid = self.files.id_of(path)
        if fid is None:
            fid, _ = self.files.add(path, None, start=False)
            self._emit({"k": "newfile", **self.files.entries[fid]}, None)
        return fid

    def _host(self, record: dict[str, Any], payload: bytes | memoryview | None = None) -> None:
        self.writes += 1
        record["w"] = self.writes
        if record["k"] != "content" and self.units.get(record.get("u"), {}).get("sync"):
            record["sync"] = True           # an O_SYNC fd: durable when the call returned
        self.written.add(record["f"])
        self._emit(record, payload)

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self.closed:
                return
            handler = self._handlers.get(event.kind)
            if handler is not None:
                handler(event.unit, event.data)

    # -- events --------------------------------------------------------------------------
    def _on_message(self, unit: int | None, d: dict) -> None:
        self._emit({"k": "msg", "u": unit, "id": d.get("msg_id"), "text": d.get("text")}, None)

    def _on_create(self, unit: int, d: dict) -> None:
        fid = self._file(d["file"])
        record = {"k": "content", "u": unit, "f": fid, "why": "create",
                  "b": self._file(d["backing"]) if d.get("backing") else None,
                  "version": d.get("version")}
        self._content(record, d["file"])

    def _content(self, record: dict[str, Any], path: str) -> None:
        found = hostfiles.file_content(path)
        length, extents, payload = found if found is not None else (0, [], b"")
        record.update({"len": length, "ext": extents})
        self._host(record, payload)

    def _on_switch(self, unit: int, d: dict) -> None:
        fid = self._file(d["file"])
        self._emit({"k": "switch", "u": unit, "f": fid, "old": d.get("old_backing"),
                    "new": d.get("new_backing"), "version": d.get("version")}, None)
        head = hostfiles.read_range(d["file"], 0, HEADER_READ_SIZE)
        try:
            size = read_header(head).layout.size
        except (CowFormatError, UbdError):
            size = len(head)
        self._host({"k": "hw", "u": unit, "f": fid, "o": 0, "why": "header"}, head[:size])

    def _on_resize(self, unit: int, d: dict) -> None:
        fid = self._file(d["file"])
        record = {"k": "content", "u": unit, "f": fid, "why": "resize"}
        record.update({k: d.get(k) for k in ("old_length", "new_length", "old_size", "new_size")})
        self._content(record, d["file"])

    def _on_open(self, unit: int, d: dict) -> None:
        fid = self._file(d["file"])
        backing = self._file(d["backing"]) if d.get("backing") else None
        geo = geometry_record(d["file"]) if d.get("cow") else None
        state = {"f": fid, "b": backing, "cow": bool(d.get("cow")), "sync": bool(d.get("sync")),
                 "geo": geo}
        self.units[unit] = state
        self._emit({"k": "open", "u": unit, "f": fid, "b": backing, "ro": bool(d.get("readonly")),
                    "sync": state["sync"], "cow": state["cow"], "size": d.get("size"),
                    "geo": geo}, None)

    def _on_close(self, unit: int, d: dict) -> None:
        self._emit({"k": "close", "u": unit, "f": self._file(d["file"])}, None)

    def _on_request(self, unit: int, d: dict) -> None:
        record = {"k": "req", "u": unit, "op": d["op"], "s": d["offset"] // SECTOR_SIZE,
                  "c": d["length"] // SECTOR_SIZE}
        if d.get("data") is not None:
            record["h"] = data_hash(d["data"])
        if self.units.get(unit, {}).get("sync"):
            record["sync"] = True
        self._emit(record, None)

    def _on_hostwrite(self, unit: int, d: dict) -> None:
        fid = self._file(d["file"])
        offset = d["file_offset"]
        self._host({"k": "hw", "u": unit, "f": fid, "o": offset,
                    "why": self._region(unit, offset)}, d["data"])

    def _region(self, unit: int, offset: int) -> str:
        state = self.units.get(unit)
        if state is None or not state["cow"] or state["geo"] is None:
            return "raw"
        geo = state["geo"]
        if offset >= geo["do"]:
            return "data"
        return "bitmap" if offset >= geo["bo"] else "header"

    def _on_write(self, unit: int, d: dict) -> None:
        self._emit({"k": "seg", "u": unit, "t": d.get("target"), "s": d["offset"] // SECTOR_SIZE,
                    "c": d["length"] // SECTOR_SIZE, "fo": d["file_offset"]}, None)

    def _on_bitmap(self, unit: int, d: dict) -> None:
        self._emit({"k": "bitmap", "u": unit, "fo": d["file_offset"], "len": d["length"],
                    "first": d.get("first_sector")}, None)

    def _on_read(self, unit: int, d: dict) -> None:
        self._emit({"k": "read", "u": unit, "src": d.get("source"),
                    "s": d["offset"] // SECTOR_SIZE, "c": d["length"] // SECTOR_SIZE,
                    "fo": d["file_offset"]}, None)

    def _falloc(self, unit: int, d: dict, op: str) -> None:
        state = self.units.get(unit)
        if state is None:
            return
        self._host({"k": "hf", "u": unit, "f": state["f"], "op": op, "o": d["file_offset"],
                    "len": d["length"], "s": d["offset"] // SECTOR_SIZE,
                    "c": d["length"] // SECTOR_SIZE}, None)

    def _on_discard(self, unit: int, d: dict) -> None:
        self._falloc(unit, d, "punch")

    def _on_zeroes(self, unit: int, d: dict) -> None:
        self._falloc(unit, d, "zero")

    def _on_flush(self, unit: int, d: dict) -> None:
        self._emit({"k": "flush", "u": unit}, None)

    def _on_sync(self, unit: int, d: dict) -> None:
        self._emit({"k": "sync", "u": unit, "f": self._file(d["file"])}, None)

    def _on_fault(self, unit: int, d: dict) -> None:
        """A fault --inject made (lab/inject.py), before the bytes a torn or crash write
        left (their `hw` record follows for a torn write, precedes it for a crash)."""
        record = {"k": "fault", "u": unit, "f": self._file(d["file"]), "spec": d["spec"],
                  "call": d["call"], "kind": d["host"], "role": d["role"], "o": d["file_offset"],
                  "len": d["length"], "s": d["first_sector"], "c": d["sectors"],
                  "act": d["action"], "after": self.writes}
        for key in ("errno", "guest_errno", "torn"):
            if key in d:
                record[key] = d[key]
        self._emit(record, None)

    def flush(self) -> None:
        """Push what the sinks hold to their files now (before an injected crash)."""
        with self._lock:
            for sink in self.sinks:
                flush = getattr(sink, "flush", None)
                if flush is not None:
                    flush()

    # -- marks and the end -----------------------------------------------------------------
    def mark(self, name: str) -> int:
        """Record mark `name` now; returns the number of host writes before it.
        Raises ValueError for a name already used."""
        with self._lock:
            if name in self.mark_names:
                raise ValueError(f"mark '{name}' is already set")
            self.mark_names.add(name)
            self._emit({"k": "mark", "name": name, "after": self.writes}, None)
            for sink in self.sinks:
                flush = getattr(sink, "flush", None)
                if flush is not None:
                    flush()
            return self.writes

    def close(self) -> None:
        """The `end` record (each written file's final identity), then the sinks close."""
        with self._lock:
            if self.closed:
                return
            if self._unsubscribe is not None:
                self._unsubscribe()
            finals = []
            for fid in sorted(self.written):
                entry = hostfiles.identity(self.files.entries[fid]["path"])
                finals.append({"f": fid, **{k: entry.get(k) for k in ("exists", "size", "sha256")}})
            self._emit({"k": "end", "writes": self.writes, "files": finals}, None)
            self.closed = True
            for sink in self.sinks:
                close = getattr(sink, "close", None)
                if close is not None:
                    close()


class LogSink:
    """Records, payloads included, into the log file."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer

    def __call__(self, record: dict[str, Any], payload: bytes | memoryview | None) -> None:
        self.writer.write(record, payload)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def starting_files(units: Iterable[UnitSpec]) -> FileTable:
    """Every file the units name, with its identity before anything is opened."""
    from ..ops.unitfiles import unit_files
    table = FileTable()
    for role, path in unit_files(list(units)).items():
        table.add(path, role, start=True)
    return table


def build_header(table: FileTable, *, kernel: str | None, tool: str,
                 words: list[str] | None) -> dict[str, Any]:
    return {"magic": MAGIC, "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tool": tool, "kernel": kernel, "words": words, "cwd": os.getcwd(),
            "hash": "sha256/128", "files": table.entries}


def open_new_log(path: str, protected: dict[str, str]) -> int:
    """The log's fd: a new or empty file, never one of the units' files, never truncated."""
    fd = open_log(path, protected)
    if os.fstat(fd).st_size:
        os.close(fd)
        raise UbdError(f"'{path}' already exists and is not empty: refusing to overwrite a "
                       "log (remove it or record to another name)")
    return fd


def snapshot_candidates(table: FileTable) -> list[dict[str, Any]]:
    """The files --record-snapshot copies into the log: every unit's own file (its COW or
    raw file) that exists. Backing files are never written by the device: their sha256 is
    enough to find and check them again."""
    return [entry for entry in table.entries
            if entry.get("exists") and entry.get("kind") == "regular"
            and any(r.endswith(" file") and "backing" not in r for r in entry["roles"])]


def record_snapshots(recorder: Recorder, entries: list[dict[str, Any]]) -> None:
    """The starting content of `entries` (data extents only) as `snapshot` records."""
    for entry in entries:
        found = hostfiles.file_content(entry["path"])
        if found is None:
            continue
        length, extents, payload = found
        recorder._emit({"k": "snapshot", "f": entry["f"], "len": length, "ext": extents},
                       payload)


def attach_recorder(bus: EventBus, path: str | None, units: Iterable[UnitSpec], *,
                    kernel: str | None = None, tool: str = "ubdsim", words: list[str] | None = None,
                    trace: Sink | None = None, snapshot: bool = False) -> Recorder:
    """Subscribe a recorder to `bus`: a log at `path` (None: no log), and/or `trace`.

    Call it before the units boot (so that the starting files' identities come before any
    write, and the creation of a COW file is seen). Close the returned Recorder after the
    units are closed: it writes the `end` record."""
    units = list(units)
    table = starting_files(units)
    sinks: list[Sink] = []
    if path is not None:
        from ..ops.unitfiles import unit_files
        sinks.append(LogSink(LogWriter(open_new_log(path, unit_files(units)))))
    if trace is not None:
        sinks.append(trace)
    header = build_header(table, kernel=kernel, tool=tool, words=words)
    copies = snapshot_candidates(table) if snapshot and path is not None else []
    for entry in copies:                 # the header says which files have a snapshot
        entry["snapshot"] = True
    recorder = Recorder(table, sinks, header)
    record_snapshots(recorder, copies)
    recorder._unsubscribe = bus.subscribe(recorder, RECORDED_KINDS)
    return recorder


__all__ = ["FileTable", "LogSink", "Recorder", "attach_recorder", "data_hash", "geometry_record",
           "snapshot_candidates"]
