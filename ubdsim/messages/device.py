"""printk texts of the device code (owned by the device work; see ubdsim/messages/__init__.py)."""
from __future__ import annotations

from . import MessageText

MESSAGES: dict[str, MessageText] = {}
