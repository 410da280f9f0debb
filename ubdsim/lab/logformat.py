"""The lab log on disk: one header line, then one record per event, bytes inline.

Format (docs/lab-log-format.md is the reference): UTF-8 JSON lines, each a JSON object
written compactly; a record with a payload says how many bytes in its `n` field and the raw
bytes follow its newline at once, then one more newline. So a log is one self-contained
file (no side file to lose), host-write bytes cost no base64 overhead, every record is
self-delimiting (a reader never guesses where bytes end), `head -1 LOG` shows the header,
and a log cut short by a killed recorder is read up to its last whole record.

The first line is the header: {"magic": "ubdsim-lab-log", "version": 1, ...}. Readers
refuse another magic and a version they do not know; writers of a later version bump
VERSION when a reader of this one would misread the log (new record kinds and new fields
do not: readers ignore what they do not know).
"""
from __future__ import annotations

import errno as _errno
import json
import mmap
import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import UbdError
from ..fileio import shown

MAGIC = "ubdsim-lab-log"
VERSION = 1

# Records that change a host file, numbered 1, 2, ... by their "w" field (replay --upto N).
HOST_WRITE_KINDS = frozenset({"hw", "hf", "content"})

_FLUSH_AT = 1 << 20


class LogError(UbdError):
    """A log that cannot be read (not a lab log, an unknown version, damaged)."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def encode(record: dict[str, Any], payload: bytes | memoryview | None = None) -> bytes:
    """One record's bytes: the JSON line, then the payload (if any) and a newline."""
    if payload is not None:
        record["n"] = len(payload)
    line = _ENCODER.encode(record).encode("ascii") + b"\n"
    if payload is None:
        return line
    return line + bytes(payload) + b"\n"


class LogWriter:
    """Appends records to an open fd (the caller opened it through fileio.open_log)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self.records = 0

    def write(self, record: dict[str, Any], payload: bytes | memoryview | None = None) -> None:
        if payload is None:
            self._buffer += encode(record)
        else:                               # the payload copied once, into the buffer
            record["n"] = len(payload)
            self._buffer += encode(record)
            self._buffer += payload
            self._buffer += b"\n"
        self.records += 1
        if len(self._buffer) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        with memoryview(self._buffer) as whole:
            view = whole
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            del view
        self._buffer.clear()

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self.fd)
                self.fd = -1


@dataclass
class Log:
    """A log read into memory (payloads stay in the mmap'ed file until asked for)."""

    path: str
    header: dict[str, Any]
    records: list[dict[str, Any]]
    complete: bool                      # ends with an `end` record
    problem: str | None = None          # why reading stopped early (a cut-off record)
    _map: mmap.mmap | None = field(default=None, repr=False)

    def payload(self, record: dict[str, Any]) -> memoryview:
        """The bytes of a record that has them (`n` bytes)."""
        at, size = record["_p"], record["n"]
        assert self._map is not None
        return memoryview(self._map)[at:at + size]

    @property
    def files(self) -> dict[int, dict[str, Any]]:
        """The header's files and those a `newfile` record added, by id."""
        found = {entry["f"]: entry for entry in self.header.get("files", [])}
        for record in self.records:
            if record["k"] == "newfile":
                found[record["f"]] = record
        return found

    def host_writes(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["k"] in HOST_WRITE_KINDS]

    def marks(self) -> dict[str, int]:
        """Mark name -> the number of host writes before it."""
        return {r["name"]: r["after"] for r in self.records if r["k"] == "mark"}

    def end(self) -> dict[str, Any] | None:
        return self.records[-1] if self.records and self.records[-1]["k"] == "end" else None

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass                        # a payload view is still alive; GC closes it
            self._map = None

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_log(path: str) -> Log:
    """Read a lab log; raises LogError (one line) for a file that is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        raise LogError(f"cannot read log '{shown(path)}': {err.strerror}", errno=err.errno) from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise LogError(f"'{shown(path)}' is empty: not a lab log", errno=_errno.EINVAL)
        try:
            data = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        except (OSError, ValueError) as err:
            raise LogError(f"cannot map log '{shown(path)}': {err}", errno=_errno.EINVAL) from None
    finally:
        os.close(fd)
    try:
        header, records, problem = _parse(data, path)
    except BaseException:
        data.close()
        raise
    complete = bool(records) and records[-1]["k"] == "end"
    return Log(path, header, records, complete, problem, data)


def _parse(data: mmap.mmap, path: str) -> tuple[dict, list[dict], str | None]:
    end = data.find(b"\n")
    if end < 0:
        raise LogError(f"'{shown(path)}' is not a lab log (no header line)", errno=_errno.EINVAL)
    try:
        header = json.loads(data[:end])
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise LogError(f"'{shown(path)}' is not a lab log (its first line is not a "
                       f"{MAGIC} header)", errno=_errno.EINVAL)
    version = header.get("version")
    if version != VERSION:
        raise LogError(f"'{shown(path)}' is a lab log of version {version}; this ubdsim reads "
                       f"version {VERSION}", errno=_errno.EINVAL)
    records: list[dict] = []
    position, size = end + 1, len(data)
    problem = None
    while position < size:
        start = position
        end = data.find(b"\n", position)
        if end < 0:
            problem = f"the last record (at byte {position}) is cut off"
            break
        try:
            record = json.loads(data[position:end])
        except ValueError:
            problem = f"the record at byte {position} is not JSON"
            break
        if not isinstance(record, dict) or "k" not in record:
            problem = f"the record at byte {position} has no kind"
            break
        position = end + 1
        if "n" in record:
            need = record["n"]
            if not isinstance(need, int) or need < 0 or position + need + 1 > size:
                problem = f"the bytes of the record at byte {start} are cut off"
                break
            record["_p"] = position
            position += need + 1
        records.append(record)
    return header, records, problem


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the reader's private fields (for --json output)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


__all__ = ["HOST_WRITE_KINDS", "Log", "LogError", "LogWriter", "MAGIC", "VERSION", "encode",
           "public", "read_log"]
