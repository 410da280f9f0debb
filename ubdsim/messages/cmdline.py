"""printk texts of the cmdline code (owned by the cmdline work; see ubdsim/messages/__init__.py)."""
from __future__ import annotations

from . import MessageText

MESSAGES: dict[str, MessageText] = {}
