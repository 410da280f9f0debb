"""`ubdsim show`: pictures of a COW file, for looking rather than reading.

This package owns the layout model a picture is drawn from (`model`: frozen dataclasses
computed from CowImage, the device view and the backing-chain walk, never a data byte read),
the quantising of runs onto cells or pixels (`cells`: the rule that makes a one-sector write
in a 1 TiB disk still show), the compact Unicode map printed in a terminal (`terminal`), and
the figure drawn with matplotlib (`figure`: the file's layout to scale, a zoom on its
header and bitmap, the sector map, the chain's layers, and a before/after comparison).
The model knows nothing of drawing and the drawings compute nothing about COW files.
"""
from __future__ import annotations

from .model import Comparison, CowLayout, LayerView, Part, Span, compare, describe

__all__ = ["Comparison", "CowLayout", "LayerView", "Part", "Span", "compare", "describe"]
