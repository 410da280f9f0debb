"""Which COW header versions each kernel reads and writes.

From: `arch/um/drivers/cow_user.c` read_cow_header(), write_cow_header() [6.1];
2.4.20's cow_user.c knew V1 and V2 only and wrote V2.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FormatRules:
    readable_versions: frozenset[int]
    recovers_broken_v3: bool     # 6.1: a V3 header with 4 zero bytes at offset 32 is the 64-bit layout
    created_version: int         # header version written when the kernel creates a COW file
    created_alignment: int | None  # alignment field written (None: versions < 3 have none, sectorsize)
    switch_version: int          # header version written by a backing-file switch


FORMAT_2_4 = FormatRules(readable_versions=frozenset({1, 2}), recovers_broken_v3=False,
                         created_version=2, created_alignment=None, switch_version=2)
FORMAT_6_1 = FormatRules(readable_versions=frozenset({1, 2, 3}), recovers_broken_v3=True,
                         created_version=3, created_alignment=4096, switch_version=3)
