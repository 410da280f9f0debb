"""docs/cow-format.md states the same byte offsets as ubdsim/cow/layouts.py.

The offsets themselves are checked against cow_user.c's structs in test_layouts.py; this test
keeps the human-readable document from drifting away from the code.
"""
import re
from pathlib import Path

from ubdsim.cow.layouts import LAYOUTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "cow-format.md"


def _doc_tables() -> dict[str, tuple[int, list[tuple[int, int, str]]]]:
    tables: dict[str, tuple[int, list[tuple[int, int, str]]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"## (\S+) \(.*?(\d+) bytes", line)
        if heading:
            current = heading.group(1)
            tables[current] = (int(heading.group(2)), [])
            continue
        row = re.match(r"\| (\d+) \| (\d+) \| (\w+) \|", line)
        if row and current:
            tables[current][1].append((int(row.group(1)), int(row.group(2)), row.group(3)))
    return tables


def test_every_layout_is_documented_with_its_fields_and_size():
    tables = _doc_tables()
    assert set(tables) == set(LAYOUTS)
    for name, layout in LAYOUTS.items():
        size, rows = tables[name]
        assert size == layout.size, name
        assert rows == [(start, end - start, field) for field, start, end in layout.field_spans()], name
