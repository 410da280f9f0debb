"""No input makes the parser raise, in any profile (the kernel never refuses to boot over a
`ubd` option either), and its output always keeps the contract other areas rely on."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ubdsim.cmdline import ParseResult, UnitSpec, parse_command_line
from ubdsim.profiles import PROFILES

# Words biased towards the parser's alphabet, plus arbitrary text and raw bytes.
_ALPHABET = st.sampled_from(list("ubdU=,:\"'rscdtRx0123456789aApqz -\t\xa0") + ["\udcff", "\udca0", "\x00"])
_BIASED = st.lists(_ALPHABET, max_size=24).map("".join).map(lambda w: "ubd" + w)
_WORD = st.one_of(_BIASED, st.text(max_size=30), st.binary(max_size=30),
                  st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")))
_WORDS = st.one_of(st.lists(_WORD, max_size=8), st.text(max_size=60), st.binary(max_size=60))


def _check(result: ParseResult, max_units: int) -> None:
    assert 0 in result.units
    assert all(0 <= unit < max_units for unit in result.units)
    for unit, spec in result.units.items():
        assert isinstance(spec, UnitSpec) and spec.unit == unit and isinstance(spec.file, str)
        assert spec.size is None or 0 <= spec.size < 2 ** 64
    assert all(isinstance(m, str) for m in result.messages)
    assert result.messages == result.parse_messages + result.init_messages


@settings(max_examples=300, deadline=None)
@given(words=_WORDS)
def test_parser_never_raises(words) -> None:
    for profile in PROFILES.values():
        _check(parse_command_line(words, profile), profile.cmdline.max_units)


@settings(max_examples=150, deadline=None)
@given(words=st.lists(_BIASED.filter(lambda w: "\x00" not in w), max_size=6))
def test_joined_string_and_words_agree(words: list[str]) -> None:
    """A list of words is the same command line as the words joined by spaces (add_arg()).
    (Not with NUL: a NUL ends one argv word, but the whole of a joined string.)"""
    for profile in PROFILES.values():
        assert parse_command_line(words, profile) == parse_command_line(" ".join(words), profile)
