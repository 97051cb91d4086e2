"""The keyed, position-dependent pattern."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.pattern import PAGE, SLACK, Pattern, first_mismatch, mismatch_ranges


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


@given(
    st.integers(min_value=0, max_value=1 << 30).map(lambda x: x * 16),
    st.integers(min_value=1, max_value=(3 << 20) // 16).map(lambda x: x * 16),
    st.integers(min_value=0, max_value=(1 << 20) // 16).map(lambda x: x * 16),
)
@settings(max_examples=60, deadline=None)
def test_whole_pages_and_pieces_are_one_stream(offset: int, length: int, cut: int) -> None:
    """A long fill (whole pages through GCM) equals the same range filled in two pieces
    cut anywhere (pieces inside a page go through CTR): one keystream, however rendered."""
    p = Pattern(b"k" * 32, "x")
    cut = min(cut, length)
    whole = bytearray(length + SLACK)
    p.fill(memoryview(whole), offset, length)
    parts = bytearray(length + SLACK)
    p.fill(memoryview(parts), offset, cut)
    p.fill(memoryview(parts)[cut:], offset + cut, length - cut)
    assert whole[:length] == parts[:length]
    for at in (0, cut - cut % 16, length - 16):
        if 0 <= at < length:
            assert p.decode_offset(bytes(whole[at : at + 16])) == offset + at


def test_a_page_is_aes_of_its_nonce_and_counter() -> None:
    """The block at page P, counter C is AES-128(key, P (96 bits) || 2 + C (32 bits))."""
    p = Pattern(b"k" * 32, "x")
    key = hmac.new(b"k" * 32, b"x", hashlib.sha256).digest()[:16]
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    for offset in (0, 16, PAGE - 16, PAGE, 5 * PAGE + 4096):
        page, within = divmod(offset, PAGE)
        block_in = page.to_bytes(12, "big") + (2 + within // 16).to_bytes(4, "big")
        assert p.bytes_at(offset, 16) == enc.update(block_in)
