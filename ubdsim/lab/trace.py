"""The I/O trace: lab records rendered one line each, as text for people or as JSON lines.

Both renderings take the records the recorder writes to a log (and `ubdsim log show` reads
back), so a live `--trace` and a recorded log show the same events.

`jsonl`: every record on one line, exactly as in the log but without its payload bytes
(`n` still says how many there were); the header first.

`text`: one line per guest request, with what the driver and the host did for it:

    ubda write 8+8 sectors -> #3 c.cow pwrite 16384+4096 (data); #4 pwrite 8192+16 (bitmap words 0-1)
    ubda read 0+8 sectors <- b.img 0+4096
    ubda flush: no host call

`#N` is the host write's number (what `ubdsim replay --upto N` counts); a request with more
than five host writes (mkfs's discard of the whole device) shows its first four and the range.
A request's line is
complete when its last step is known, so it is printed when the next record that is not one
of its steps arrives (the next request, an open or close, a mark) or when the trace ends.
Everything else (open, create, switch, resize, close, marks, kernel messages) is one line.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ..fileio import shown
from .logformat import public

STEP_KINDS = frozenset({"hw", "hf", "seg", "bitmap", "read"})
MAX_READ_RUNS = 3
MAX_HOST_STEPS = 4         # a longer request's line shows its first steps and the count


def _profile_rules(kernel: str | None):
    from ..profiles import UnknownProfile, get_profile
    try:
        return get_profile(kernel).device if kernel else None
    except UnknownProfile:
        return None


class TextRenderer:
    """Records in, text lines out (through `emit`)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self.files: dict[int, dict[str, Any]] = {}
        self.rules = None
        self.geo: dict[int, dict | None] = {}
        self.units: dict[int, dict[str, Any]] = {}
        self._pending: dict[str, Any] | None = None

    # -- names -----------------------------------------------------------------------------
    def disk(self, unit: int | None) -> str:
        if unit is None:
            return "kernel"
        return self.rules.disk_name(unit) if self.rules is not None else f"ubd{unit}"

    def name(self, fid: int | None) -> str:
        if fid is None:
            return "?"
        entry = self.files.get(fid)
        return shown(entry.get("given") or entry["path"]) if entry else f"file{fid}"

    def word(self) -> int:
        return self.rules.bitmap_word if self.rules is not None else 8

    # -- records -----------------------------------------------------------------------------
    def __call__(self, record: dict[str, Any], payload: object = None) -> None:
        kind = record.get("k")
        if kind is None and "magic" in record:
            self._header(record)
            return
        if kind in STEP_KINDS and self._pending is not None \
                and self._pending["u"] == record.get("u"):
            self._pending["steps"].append(record)
            return
        self.flush()
        if kind == "req":
            self._pending = {"u": record["u"], "req": record, "steps": []}
            return
        line = self._line(record)
        if line is not None:
            self.emit(line)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self.emit(self._request_line(pending["req"], pending["steps"]))

    def close(self) -> None:
        self.flush()

    def _header(self, header: dict[str, Any]) -> None:
        self.rules = _profile_rules(header.get("kernel"))
        parts = []
        for entry in header.get("files", []):
            self.files[entry["f"]] = entry
            parts.append(f"{self.name(entry['f'])} ({_identity(entry)})")
        kernel = header.get("kernel") or "?"
        self.emit(f"# ubdsim lab log v{header.get('version')}, kernel {kernel}, "
                  f"{header.get('tool', '?')}: " + ", ".join(parts))

    def _line(self, r: dict[str, Any]) -> str | None:
        kind, disk = r["k"], self.disk(r.get("u"))
        if kind == "msg":
            return f"{disk}: kernel: {r.get('text')}"
        if kind == "newfile":
            self.files[r["f"]] = r
            return f"file {self.name(r['f'])} ({_identity(r)})"
        if kind == "open":
            self.geo[r["u"]] = r.get("geo")
            self.units[r["u"]] = r
            mode = "ro" if r.get("ro") else "rw"
            sync = ", O_SYNC" if r.get("sync") else ""
            if r.get("cow"):
                geo = r.get("geo") or {}
                what = f"COW V{geo.get('v', '?')} over {self.name(r.get('b'))}"
            else:
                what = "raw"
            return f"{disk} open {self.name(r['f'])}: {what}, {r.get('size')} bytes, {mode}{sync}"
        if kind == "close":
            return f"{disk} close {self.name(r['f'])}"
        if kind == "content":
            return f"{disk} {self._content(r)}"
        if kind == "snapshot":
            return (f"snapshot of {self.name(r['f'])}: {r['len']} bytes, {len(r['ext'])} extents, "
                    f"{r.get('n', 0)} bytes of data in the log")
        if kind == "switch":
            return (f"{disk} switch {self.name(r['f'])}: backing {shown(r.get('old') or '?')} -> "
                    f"{shown(r.get('new') or '?')} (V{r.get('version')} header)")
        if kind in STEP_KINDS:
            return f"{disk} {self._step(r)}"
        if kind == "flush":
            return f"{disk} flush (the driver makes no host call)"
        if kind == "sync":
            return f"{disk} host fsync {self.name(r['f'])}"
        if kind == "mark":
            return f"mark {r['name']} (after host write #{r['after']})"
        if kind == "fault":
            return (f"{disk} FAULT {r['act']} ({r['spec']}, call {r['call']}): {r['kind']} "
                    f"{r['len']} bytes at {r['o']} of {self.name(r['f'])}"
                    + (f", guest gets {r['guest_errno']}" if r.get("guest_errno") else ""))
        if kind == "end":
            return f"end: {r.get('writes')} host writes"
        return None

    def _content(self, r: dict[str, Any]) -> str:
        data = sum(n for _, n in r.get("ext", []))
        body = f"#{r['w']} {self.name(r['f'])} set to {r['len']} bytes ({data} bytes of data)"
        if r.get("why") == "create":
            return (f"create {self.name(r['f'])} over {self.name(r.get('b'))} "
                    f"(V{r.get('version')}): {body}")
        if r.get("why") == "resize":
            return f"resize {self.name(r['f'])}: {r.get('old_length')} -> {r.get('new_length')} bytes: {body}"
        return body

    def _request_line(self, req: dict[str, Any], steps: list[dict[str, Any]]) -> str:
        op = req["op"]
        head = f"{self.disk(req['u'])} {op} {req['s']}+{req['c']} sectors"
        if req.get("sync"):
            head += " (O_SYNC)"
        if op == "read":
            runs = [s for s in steps if s["k"] == "read"]
            shown_runs = [self._read_run(s) for s in runs[:MAX_READ_RUNS]]
            more = len(runs) - len(shown_runs)
            tail = "; ".join(shown_runs) + (f"; +{more} more runs" if more > 0 else "")
            return f"{head} <- {tail}" if tail else head
        host = [s for s in steps if s["k"] in ("hw", "hf")]
        segments = sum(1 for s in steps if s["k"] == "seg")
        parts, last_file = [], None
        for step in host[:MAX_HOST_STEPS] if len(host) > MAX_HOST_STEPS + 1 else host:
            parts.append(self._step(step, with_file=step["f"] != last_file))
            last_file = step["f"]
        if len(host) > MAX_HOST_STEPS + 1:
            parts.append(f"... {len(host)} host writes in all, #{host[0]['w']}-#{host[-1]['w']}")
        line = f"{head} -> " + "; ".join(parts) if parts else f"{head}: no host write"
        if segments > 1:
            line += f" [{segments} segments]"
        return line

    def _read_run(self, s: dict[str, Any]) -> str:
        src = s.get("src")
        unit = self.units.get(s.get("u"), {})
        fid = unit.get("b") if src == "backing" else unit.get("f")
        where = self.name(fid) if fid is not None else src
        return f"{where} {s['fo']}+{s['c'] * 512}"

    def _step(self, s: dict[str, Any], *, with_file: bool = True) -> str:
        kind = s["k"]
        name = f"{self.name(s['f'])} " if with_file and "f" in s else ""
        if kind == "hw":
            length = s.get("n", 0)
            text = f"#{s['w']} {name}pwrite {s['o']}+{length} ({self._why(s)})"
        elif kind == "hf":
            text = f"#{s['w']} {name}{s['op']} {s['o']}+{s['len']}"
        elif kind == "seg":
            text = f"segment {s['s']}+{s['c']} sectors -> @{s['fo']}"
        elif kind == "bitmap":
            word = self.word()
            text = f"bitmap word {s['first'] // (8 * word) if s.get('first') is not None else '?'} @{s['fo']}"
        else:
            text = f"read {self._read_run(s)}"
        return text

    def _why(self, s: dict[str, Any]) -> str:
        why = s.get("why", "?")
        if why != "bitmap":
            return why
        geo = self.geo.get(s.get("u")) or {}
        if "bo" not in geo:
            return why
        word = self.word()
        first = (s["o"] - geo["bo"]) // word
        last = (s["o"] + s.get("n", 0) - geo["bo"] - 1) // word
        return f"bitmap word {first}" if first == last else f"bitmap words {first}-{last}"


def _identity(entry: dict[str, Any]) -> str:
    if not entry.get("exists"):
        return "absent"
    digest = entry.get("sha256")
    text = f"{entry.get('size')} bytes"
    if digest:
        text += f", sha256 {digest[:12]}"
    if entry.get("snapshot"):
        text += ", snapshot in the log"
    return text


class JsonRenderer:
    """Records in, one JSON line each out (payload bytes left out)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit

    def __call__(self, record: dict[str, Any], payload: object = None) -> None:
        self.emit(json.dumps(public(record), separators=(",", ":")))

    def close(self) -> None:
        pass


class TraceSink:
    """A renderer writing to a file descriptor or a line printer; flushes per line."""

    def __init__(self, fmt: str, *, fd: int | None = None,
                 print_line: Callable[[str], None] | None = None) -> None:
        self.fd = fd
        self.print_line = print_line
        self.renderer = (JsonRenderer if fmt == "jsonl" else TextRenderer)(self._out)

    def _out(self, line: str) -> None:
        if self.fd is not None:
            data = (line + "\n").encode("utf-8", "surrogateescape")
            while data:
                data = data[os.write(self.fd, data):]
        elif self.print_line is not None:
            self.print_line(line)

    def __call__(self, record: dict[str, Any], payload: object = None) -> None:
        self.renderer(record, payload)

    def flush(self) -> None:
        if isinstance(self.renderer, TextRenderer):
            self.renderer.flush()

    def close(self) -> None:
        self.renderer.close()
        if self.fd is not None and self.fd > 2:
            os.close(self.fd)
        self.fd = None


__all__ = ["JsonRenderer", "TextRenderer", "TraceSink"]
