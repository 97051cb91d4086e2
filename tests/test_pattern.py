"""The keyed, position-dependent pattern."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fdffd.pattern import SLACK, Pattern, first_mismatch, mismatch_ranges


def test_pattern_depends_on_key_purpose_and_offset() -> None:
    """Two jobs, two passes, or two offsets never share bytes."""
    a = Pattern(b"a" * 32, "image")
    assert a.bytes_at(0, 512) != Pattern(b"b" * 32, "image").bytes_at(0, 512)
    assert a.bytes_at(0, 512) != Pattern(b"a" * 32, "wipe-1").bytes_at(0, 512)
    assert a.bytes_at(0, 512) != a.bytes_at(512, 512)


@given(st.integers(min_value=0, max_value=1 << 44), st.integers(min_value=1, max_value=5000))
def test_any_range_matches_the_stream(offset: int, length: int) -> None:
    """Bytes rendered for a sub-range equal the same bytes of a larger range."""
    p = Pattern(b"k" * 32, "x")
    start = offset - offset % 16
    big = p.bytes_at(start, length + 64)
    assert p.bytes_at(offset, length) == big[offset - start : offset - start + length]


@given(st.integers(min_value=0, max_value=1 << 50).map(lambda x: x * 16))
def test_a_block_names_the_offset_it_was_written_for(offset: int) -> None:
    """Decrypting a pattern block read back gives its offset; random bytes give None."""
    p = Pattern(b"k" * 32, "x")
    assert p.decode_offset(p.bytes_at(offset, 16)) == offset
    assert Pattern(b"z" * 32, "x").decode_offset(p.bytes_at(offset, 16)) is None


def test_fill_into_buffer_and_compare() -> None:
    """fill() writes into an I/O buffer; mismatches are found and mapped to sectors."""
    p = Pattern(b"k" * 32, "x")
    a = bytearray(8192 + SLACK)
    b = bytearray(8192 + SLACK)
    p.fill(memoryview(a), 4096, 8192)
    p.fill(memoryview(b), 4096, 8192)
    assert first_mismatch(memoryview(a), memoryview(b), 8192) == -1
    b[1000] ^= 1
    b[5000] ^= 1
    assert first_mismatch(memoryview(a), memoryview(b), 8192) == 1000
    assert mismatch_ranges(memoryview(a), memoryview(b), 8192, 512) == [(512, 512), (4608, 512)]
