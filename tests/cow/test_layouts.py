"""The header layouts agree with the byte offsets of cow_user.c's structs (spec section 3).

The expected offsets are those of the packed C structs in arch/um/drivers/cow_user.c (6.1),
and the uml_mkcow geometry below was observed from uml_mkcow on a 4 MiB backing file.
"""
from ubdsim.cow.layouts import HEADER_READ_SIZE, V1, V2, V3, V3_BROKEN
from ubdsim.cow.sizes import geometry


def test_struct_sizes_match_cow_user_c():
    assert (V1.size, V2.size, V3.size, V3_BROKEN.size) == (280, 4120, 4128, 4136)
    assert HEADER_READ_SIZE == 4136


def test_field_offsets_match_cow_user_c():
    assert [V1.offset_of(f) for f in ("backing_file", "mtime", "size", "sectorsize")] == [8, 264, 268, 276]
    assert [V2.offset_of(f) for f in ("backing_file", "mtime", "size", "sectorsize")] == [8, 4104, 4108, 4116]
    assert [V3.offset_of(f) for f in ("mtime", "size", "sectorsize", "alignment", "cow_format",
                                      "backing_file")] == [8, 12, 20, 24, 28, 32]
    assert [V3_BROKEN.offset_of(f) for f in ("mtime", "size", "sectorsize", "alignment", "cow_format",
                                             "backing_file")] == [8, 16, 24, 28, 32, 36]


def test_v3_geometry_of_a_4mib_backing_matches_uml_mkcow():
    g = geometry(V3, 4 * 1024 * 1024, 512, 4096)
    assert (g.bitmap_offset, g.bitmap_len, g.data_offset, g.file_length) == (8192, 1024, 12288, 4206592)


def test_v2_rounding_bug_drops_the_last_partial_bitmap_byte():
    g = geometry(V2, 12 * 512, 512, 512)       # 12 sectors need 2 bitmap bytes
    assert g.bitmap_len == 1 and g.rounding_bug
    assert not geometry(V2, 16 * 512, 512, 512).rounding_bug
    assert not geometry(V3, 12 * 512, 512, 4096).rounding_bug
