"""The progress bar of a fuzz run (terminals only) and its summary, as text or JSON.

Why on stderr and only on a terminal: a long run should say how far it is, but a log file or
a pipe (CI, `--json | jq`) must get the summary alone, never carriage-return debris.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


class Bar:
    """One status line, redrawn in place; silent when the stream is not a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr):
        self.total = max(total, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self.start = time.monotonic()
        self._shown = 0

    def show(self, done: int, text: str) -> None:
        if not self.enabled:
            return
        width = shutil.get_terminal_size((80, 20)).columns
        elapsed = time.monotonic() - self.start
        cells = 24
        filled = min(cells, cells * done // self.total)
        line = (f"[{'#' * filled}{'.' * (cells - filled)}] {done}/{self.total} "
                f"{elapsed:5.0f}s {text}")[:width - 1]
        self.stream.write("\r" + line.ljust(self._shown))
        self.stream.flush()
        self._shown = len(line)

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()


@dataclass
class Summary:
    seed: str
    profile: str
    programs: int = 0
    operations: int = 0
    disagreements: int = 0
    seconds: float = 0.0
    runs: int = 0                                        # judgements, shrinking included
    excluded: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)   # category -> programs
    found: list[dict] = field(default_factory=list)      # one per disagreeing program
    shrunk: list[dict] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"seed": self.seed, "profile": self.profile, "programs": self.programs,
                "operations": self.operations, "disagreements": self.disagreements,
                "agree": self.programs - self.disagreements, "seconds": round(self.seconds, 1),
                "runs": self.runs, "excluded": self.excluded, "categories": self.categories,
                "found": self.found, "shrunk": self.shrunk, "saved": self.saved}

    def text(self) -> str:
        lines = []
        for item in self.found:
            lines.append(f"DISAGREE {item['program']} ({item['operations']} ops): "
                         f"{', '.join(item['categories'])}")
            for diff in item["diffs"][:3]:
                lines.append("    " + diff.replace("\n", "\n    "))
        for item in self.shrunk:
            if item["kernel_varies"]:
                lines.append(f"LINUX.UML VARIES {item['program']} [{item['target']}]: run twice, "
                             "linux.uml disagreed with itself (not shrunk):")
                for diff in item["kernel_varies"][:3]:
                    lines.append("    " + diff.replace("\n", "\n    "))
                continue
            if not item["reproduced"]:
                lines.append(f"NOT REPRODUCED {item['program']} [{item['target']}]: it agreed "
                             "when run again (not shrunk)")
                continue
            lines.append(f"{item['verdict'].upper()} {item['program']} [{item['target']}]: "
                         f"{item['from_ops']} -> {item['ops']} ops, {item['units']} unit(s), "
                         f"{item['runs']} runs")
            lines.append(f"    options: {' '.join(item['options'])}")
            for op in item["program_lines"]:
                lines.append(f"    {op}")
            for diff in item["diffs"]:
                lines.append("    " + diff.replace("\n", "\n    "))
        for path in self.saved:
            lines.append(f"saved {path}")
        if self.excluded:
            lines.append(f"excluded: {', '.join(self.excluded)}")
        lines.append(f"seed {self.seed}: {self.programs} programs, {self.operations} operations, "
                     f"{self.disagreements} disagreements, {self.seconds:.1f} s "
                     f"({self.runs} runs of both sides)")
        return "\n".join(lines)
