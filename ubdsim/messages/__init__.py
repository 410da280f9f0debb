"""The kernel's printk texts, by message id and kernel family, each with its source function.

Texts are the kernel's own, byte for byte, printf conversions included (`%s`, `%d`, `%ld`,
`%llu`...); `render()` formats them the way the kernel's printk would. One table per area
(`block`, `cmdline`, `cow`, `device`) so that each area owns its texts; this module only merges them.
A family is a `Profile.kernel_family` value: profiles that share a driver share its texts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MessageText", "render", "text_of", "MESSAGES"]


@dataclass(frozen=True)
class MessageText:
    """One printk: its text per kernel family and the function that prints it."""

    source: str
    texts: dict[str, str] = field(default_factory=dict)

    def for_family(self, family: str) -> str:
        try:
            return self.texts[family]
        except KeyError:
            raise KeyError(f"message has no text for kernel family {family!r}: {self.source}") from None


# printf length modifiers mean nothing to Python's % operator: strip them (`%lld` -> `%d`).
_LENGTH_MODIFIERS = re.compile(r"%(-?\d*)(?:hh|h|ll|l|z|j|t)([diouxXcs])")


def _to_python_format(text: str) -> str:
    return _LENGTH_MODIFIERS.sub(r"%\1\2", text)


def _merged() -> dict[str, MessageText]:
    from . import block, cmdline, cow, device
    table: dict[str, MessageText] = {}
    for module in (block, cmdline, cow, device):
        for msg_id, message in module.MESSAGES.items():
            if msg_id in table:
                raise RuntimeError(f"message id {msg_id!r} is defined twice")
            table[msg_id] = message
    return table


MESSAGES: dict[str, MessageText] = _merged()


def text_of(msg_id: str, family: str) -> str:
    """The raw printf text of a message, as it stands in the kernel source."""
    return MESSAGES[msg_id].for_family(family)


def render(msg_id: str, family: str, *args: object) -> str:
    """The message exactly as the kernel of `family` prints it, without the trailing newline."""
    text = _to_python_format(text_of(msg_id, family))
    return text % args if args else text.replace("%%", "%")
