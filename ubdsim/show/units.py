"""Byte counts for people (512 B, 28.0 KiB, 16.0 MiB: binary units, as `ls -lh` shows them),
and the picture's width limits (here, so that the command line can check them without
importing matplotlib)."""
from __future__ import annotations

PICTURE_WIDTH = 1200         # pixels, when --width is not given
PICTURE_MIN_WIDTH = 480      # below this the strips' titles and legends no longer fit


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


__all__ = ["PICTURE_MIN_WIDTH", "PICTURE_WIDTH", "human"]
