"""The one sanitizer for untrusted text (fdffd/text.py)."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from fdffd.text import clean_udev, clean_untrusted, shown


@given(st.text(), st.integers(min_value=1, max_value=300))
def test_cleaning_is_idempotent_and_leaves_no_control_or_format_character(
    text: str, limit: int
) -> None:
    """Cleaned text holds no control, format, surrogate or private-use character, fits the
    limit, has no blank at either end, and cleaning it again changes nothing."""
    once = clean_untrusted(text, limit)
    assert len(once) <= limit
    assert once == once.strip()
    assert not any(unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"} for ch in once)
    assert clean_untrusted(once, limit) == once


def test_a_terminal_escape_and_a_bidi_override_are_dropped() -> None:
    """What could recolour a terminal or reverse a line does not survive."""
    assert clean_untrusted("San\x1b[31mDisk\u202e  Ultra") == "San[31mDisk Ultra"


def test_udev_escapes_are_decoded_before_cleaning() -> None:
    """udev's ``\\x20`` becomes a blank, its ``\\x1b`` is dropped like any control."""
    assert clean_udev("SanDisk\\x20Ultra\\x1b", 64) == "SanDisk Ultra"


def test_shown_escapes_instead_of_dropping() -> None:
    """A path an operator must recognise keeps every character, escaped."""
    assert shown("a\x01b\udcff\u202e") == "a\\x01b\\xff\\u202e"
