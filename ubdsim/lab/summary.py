"""What a lab log holds, in numbers: the operation behind `ubdsim log show`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .logformat import HOST_WRITE_KINDS, Log


@dataclass(frozen=True)
class FileSummary:
    fid: int
    path: str
    given: str
    roles: tuple[str, ...]
    exists: bool
    size: int | None
    sha256: str | None
    snapshot: bool
    writes: int                     # host writes to it
    bytes_written: int
    final_exists: bool | None       # from the `end` record
    final_size: int | None
    final_sha256: str | None


@dataclass(frozen=True)
class LogSummary:
    path: str
    version: int
    tool: str | None
    kernel: str | None
    created: str | None
    words: tuple[str, ...]
    complete: bool
    problem: str | None
    records: int
    files: tuple[FileSummary, ...]
    requests: dict[str, dict[str, int]]         # op -> {"count", "sectors"}
    host_writes: int
    host_write_kinds: dict[str, int]            # "pwrite data", "punch", "content create"...
    host_syncs: int
    sync_units: tuple[int, ...]                 # units opened with flag s (O_SYNC)
    marks: tuple[tuple[str, int], ...]          # (name, host writes before it)
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def durability(self) -> str:
        """One sentence on what made writes durable on the host in this run."""
        if self.host_syncs == 0 and not self.sync_units:
            return ("no host sync in this log: no unit has flag s and nothing fsynced a unit "
                    "file (under 6.1 a guest flush reaches no host file, measured), so nothing "
                    "the guest wrote was durable before the run ended")
        parts = []
        if self.sync_units:
            parts.append("units " + ", ".join(map(str, self.sync_units)) + " have flag s: each "
                         "of their host writes is durable when it returns (O_SYNC)")
        if self.host_syncs:
            parts.append(f"{self.host_syncs} host fsyncs of unit files")
        return "; ".join(parts)


def summarize(log: Log) -> LogSummary:
    kinds: dict[str, int] = {}
    requests: dict[str, dict[str, int]] = {}
    host_kinds: dict[str, int] = {}
    per_file: dict[int, list[int]] = {}
    sync_units: set[int] = set()
    syncs = 0
    for r in log.records:
        kind = r["k"]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind == "req":
            entry = requests.setdefault(r["op"], {"count": 0, "sectors": 0})
            entry["count"] += 1
            entry["sectors"] += r.get("c", 0)
        elif kind == "flush":
            entry = requests.setdefault("flush", {"count": 0, "sectors": 0})
            entry["count"] += 1
        elif kind == "open" and r.get("sync"):
            sync_units.add(r["u"])
        elif kind == "sync":
            syncs += 1
        if kind in HOST_WRITE_KINDS:
            label = {"hw": f"pwrite {r.get('why', '?')}", "hf": r.get("op", "?"),
                     "content": f"content {r.get('why', '?')}"}[kind]
            host_kinds[label] = host_kinds.get(label, 0) + 1
            counts = per_file.setdefault(r["f"], [0, 0])
            counts[0] += 1
            counts[1] += r.get("n", 0) if kind != "hf" else 0
    end = log.end() or {}
    finals = {f["f"]: f for f in end.get("files", [])}
    files = []
    for fid, entry in sorted(log.files.items()):
        final = finals.get(fid, {})
        writes, written = per_file.get(fid, [0, 0])
        files.append(FileSummary(
            fid, entry["path"], entry.get("given", entry["path"]), tuple(entry.get("roles", ())),
            bool(entry.get("exists")), entry.get("size"), entry.get("sha256"),
            bool(entry.get("snapshot")), writes, written,
            final.get("exists") if final else None, final.get("size"), final.get("sha256")))
    header = log.header
    return LogSummary(
        path=log.path, version=header.get("version"), tool=header.get("tool"),
        kernel=header.get("kernel"), created=header.get("created"),
        words=tuple(header.get("words") or ()), complete=log.complete, problem=log.problem,
        records=len(log.records), files=tuple(files), requests=requests,
        host_writes=sum(c[0] for c in per_file.values()), host_write_kinds=host_kinds,
        host_syncs=syncs, sync_units=tuple(sorted(sync_units)),
        marks=tuple((r["name"], r["after"]) for r in log.records if r["k"] == "mark"),
        kinds=kinds)


def as_json(summary: LogSummary) -> dict[str, Any]:
    from dataclasses import asdict
    out = asdict(summary)
    out["durability"] = summary.durability
    out["marks"] = [{"name": n, "after": a} for n, a in summary.marks]
    return out


__all__ = ["FileSummary", "LogSummary", "as_json", "summarize"]
