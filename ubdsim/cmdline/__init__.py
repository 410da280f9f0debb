"""The `ubd` kernel options, parsed exactly as the chosen kernel profile parses them.

Use `parse_command_line(words, profile)`; it returns a `ParseResult` whose `units` are
`UnitSpec`s and whose `messages` are the kernel's lines in print order.
"""
from __future__ import annotations

from .parse import ParseResult, parse_command_line
from .spec import UnitSpec

__all__ = ["parse_command_line", "ParseResult", "UnitSpec"]
