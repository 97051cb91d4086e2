"""Name rules for FAT32/exFAT payloads and FAT 8.3 short names (pure, no I/O)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.errors import NameNotAllowedError
from fdffd.imaging.names import (
    CASE_LOWER_BASE,
    CASE_LOWER_EXT,
    MAX_PATH_UNITS,
    ShortName,
    assign_short_names,
    check_component,
    check_tree,
    fold_case,
    is_valid_short,
    lfn_checksum,
    native_short_name,
    utf16_units,
    windows_name_hash,
)


def _refused(name: str) -> str:
    with pytest.raises(NameNotAllowedError) as info:
        check_component(name, f"dir/{name}")
    assert info.value.fields["path"] == f"dir/{name}"
    return str(info.value.fields["detail"])


# --- check_component ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "영화",
        "겨울연가 1화.mp4",
        "中文 名字.txt",
        ".hidden",
        "  leading spaces.txt",
        "a" * 255,
        "가" * 85,
        "😀 smile.txt",
        "con-test.txt",
        "COM10",
        "nul_device",
        "x.y.z",
        "[brackets] + ; , = 'quotes'",
    ],
)
def test_portable_names_are_accepted(name: str) -> None:
    """Korean, Chinese, spaces, leading dots, 255-unit names and near-miss device names pass."""
    check_component(name, name)


def test_empty_name_is_refused() -> None:
    """An empty component (e.g. from 'a//b') is refused with a hint about slashes."""
    assert "empty name" in _refused("")


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_names_are_refused(name: str) -> None:
    """'.' and '..' are not names."""
    assert "not allowed as a name" in _refused(name)


@pytest.mark.parametrize("ch", list('"*/:<>?\\|'))
def test_reserved_characters_are_refused(ch: str) -> None:
    """Each Windows-reserved character is named in the refusal."""
    detail = _refused(f"a{ch}b.txt")
    assert f"'{ch}'" in detail and "replace it" in detail


@pytest.mark.parametrize("ch", ["\x00", "\x01", "\t", "\n", "\x1f", "\x7f"])
def test_control_characters_are_refused(ch: str) -> None:
    """Control characters (below U+0020, and DEL) are refused with their code point."""
    detail = _refused(f"a{ch}b")
    assert f"U+{ord(ch):04X}" in detail and "control character" in detail


@pytest.mark.parametrize(
    "name",
    [
        "CON",
        "con",
        "Con.txt",
        "prn.tar.gz",
        "AUX",
        "nul.mp4",
        "COM1",
        "com9.x",
        "LPT1",
        "lpt9",
        "COM0",
        "CONIN$",
        "COM¹",
        "con .txt",
    ],
)
def test_device_names_are_refused(name: str) -> None:
    """Windows device names are refused, case-insensitively and with any extension."""
    assert "reserved device name" in _refused(name)


def test_too_many_utf16_units_is_refused() -> None:
    """A 256-unit name exceeds the FAT/exFAT limit; emoji count as two units."""
    assert "256 UTF-16 code units" in _refused("a" * 256)
    assert "256 UTF-16 code units" in _refused("😀" * 128)


def test_too_many_utf8_bytes_is_refused() -> None:
    """86 Hangul syllables fit FAT but not ext4/f2fs/APFS (258 UTF-8 bytes), so are refused."""
    check_component("가" * 85, "ok")
    assert "258 bytes in UTF-8" in _refused("가" * 86)


def test_trailing_dot_is_refused() -> None:
    """A trailing dot is refused (Windows strips it)."""
    assert "ends with '.'" in _refused("movie.")


def test_trailing_space_is_refused() -> None:
    """A trailing space is refused (Windows strips it)."""
    assert "ends with a space" in _refused("movie ")


def test_non_nfc_is_refused_with_advice() -> None:
    """Decomposed Hangul (NFD, as macOS writes it) is refused with advice to normalise."""
    nfd = unicodedata.normalize("NFD", "영화.mp4")
    assert nfd != "영화.mp4"
    assert "normalise" in _refused(nfd)


def test_lone_surrogate_is_refused() -> None:
    """A string with a lone surrogate cannot be stored in UTF-16 and is refused."""
    assert "not valid Unicode" in _refused("a\udc80b")


def test_utf16_units_counts_surrogate_pairs() -> None:
    """BMP characters take one unit, others two."""
    assert utf16_units("a한中") == 3
    assert utf16_units("😀") == 2


# --- check_tree --------------------------------------------------------------------------


def test_case_collision_in_one_directory_is_refused() -> None:
    """Two names that differ only in case in one directory are refused, naming both."""
    with pytest.raises(NameNotAllowedError) as info:
        check_tree(["영화/Movie.mp4", "영화/movie.MP4"])
    detail = str(info.value.fields["detail"])
    assert "Movie.mp4" in detail and "movie.MP4" in detail and "'영화'" in detail


def test_case_collision_of_directories_is_refused() -> None:
    """A directory spelled in two cases is a collision too (Greek sigma folds as on Windows)."""
    with pytest.raises(NameNotAllowedError):
        check_tree(["Films/a", "films/b"])
    with pytest.raises(NameNotAllowedError):
        check_tree(["Σ.txt", "σ.txt"])


def test_same_name_in_different_directories_is_fine() -> None:
    """Equal names in different directories, and a path listed twice, are accepted."""
    check_tree(["a/x.txt", "b/X.TXT", "a", "a/x.txt", "a/sub", "a/sub/x.txt"])


def test_tree_checks_every_component() -> None:
    """A bad component deep in a path is reported with the whole path."""
    with pytest.raises(NameNotAllowedError) as info:
        check_tree(["ok/bad:name/file.txt"])
    assert info.value.fields["path"] == "ok/bad:name/file.txt"


def test_path_length_limit() -> None:
    """Paths up to MAX_PATH_UNITS (256) UTF-16 units pass, longer ones are refused."""
    deep = "/".join(["abcdefghi"] * 25) + "/abcdef"  # 25*10 + 6 = 256
    assert utf16_units(deep) == MAX_PATH_UNITS
    check_tree([deep])
    with pytest.raises(NameNotAllowedError) as info:
        check_tree([deep + "g"])
    assert "257 UTF-16 code units" in str(info.value.fields["detail"])


def test_fold_case_is_simple_one_to_one() -> None:
    """fold_case up-cases letter by letter and never expands (ß stays, Hangul unchanged)."""
    assert fold_case("straße ǆ 한글 ab") == "STRAßE Ǆ 한글 AB"
    assert len(fold_case("ﬁ")) == 1


# --- short names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "bits"),
    [
        ("README.TXT", b"README  TXT", 0),
        ("readme.txt", b"README  TXT", CASE_LOWER_BASE | CASE_LOWER_EXT),
        ("README.txt", b"README  TXT", CASE_LOWER_EXT),
        ("readme.TXT", b"README  TXT", CASE_LOWER_BASE),
        ("readme", b"README     ", CASE_LOWER_BASE),
        ("1234.mp4", b"1234    MP4", CASE_LOWER_EXT),
        ("A~1$", b"A~1$       ", 0),
    ],
)
def test_valid_83_names_need_no_lfn(name: str, raw: bytes, bits: int) -> None:
    """8.3 names that are uniformly cased per part get no LFN, lower case via NT case bits."""
    assert native_short_name(name) == ShortName(raw, bits, lfn=False)


@pytest.mark.parametrize(
    "name", ["ReadMe.txt", "a.b.c", ".hidden", "abcdefghi", "a.abcd", "a+b", "a b", "한.txt", "ß"]
)
def test_other_names_need_an_lfn(name: str) -> None:
    """Mixed case within a part, long parts, dots, spaces and non-ASCII need an LFN."""
    assert native_short_name(name) is None
    assert assign_short_names([name])[name].lfn


def test_mixed_case_83_name_keeps_its_short_name_without_tail() -> None:
    """'ReadMe.txt' fits 8.3 losslessly, so its alias is README.TXT (fatgen103), plus LFN."""
    assert assign_short_names(["ReadMe.txt"])["ReadMe.txt"] == ShortName(
        b"README  TXT", 0, lfn=True
    )


def test_basis_names_plain_tails_then_windows_hashed_tails() -> None:
    """Long names get ~1 to ~4, then Windows' hashed form: 2 basis characters, 4 hex
    digits of the long name's checksum, ~1."""
    names = [f"Letter to the bank {i}.doc" for i in range(12)]
    got = assign_short_names(names)
    assert [got[n].display() for n in names[:4]] == [f"LETTER~{i}.DOC" for i in range(1, 5)]
    for name in names[4:]:
        assert got[name].display() == f"LE{windows_name_hash(name):04X}~1.DOC"
    assert windows_name_hash(names[4]) != windows_name_hash(names[5])


def test_hashed_tails_count_up_when_the_hash_is_taken() -> None:
    """If a hashed alias is taken, its tail counts up (~2) and the stem shortens past ~9."""
    name = "Letter to the bank 99.doc"
    h = f"{windows_name_hash(name):04X}"
    taken = [f"LETTER~{i}.DOC" for i in range(1, 5)] + [f"LE{h}~1.DOC"]
    got = assign_short_names([*taken, name])
    assert got[name].display() == f"LE{h}~2.DOC"


def test_windows_name_hash_is_the_documented_checksum() -> None:
    """Multiply-add over UTF-16 units, scrambled mod 1000000007, nibbles reversed."""
    crc = 0
    for ch in "File name 0.txt":
        crc = (crc * 0x25 + ord(ch)) & 0xFFFF
    t = (crc * 314159269) & 0xFFFFFFFF
    t = (-t) & 0xFFFFFFFF if t > 0x7FFFFFFF else t
    t = (t - ((t * 1152921497) >> 60) * 1000000007) & 0xFFFF
    want = int(f"{t:04x}"[::-1], 16)
    assert windows_name_hash("File name 0.txt") == want


def test_native_names_claim_their_short_name_first() -> None:
    """A literal 'FOOBAR~1.TXT' keeps its name; the long 'foo bar.txt' moves to ~2."""
    got = assign_short_names(["foo bar.txt", "FOOBAR~1.TXT"])
    assert got["FOOBAR~1.TXT"].raw == b"FOOBAR~1TXT"
    assert got["foo bar.txt"].raw == b"FOOBAR~2TXT"


def test_korean_names_in_cp949_and_lossy_conversion() -> None:
    """Under CP949 Hangul is two bytes a syllable, never split; characters invalid in 8.3
    become '_' and force a tail; spaces and embedded periods are dropped."""
    got = assign_short_names(["겨울연가 1화.mp4", "a+b[c].txt", "...dots.txt", "x.y.jpeg"])
    assert got["겨울연가 1화.mp4"].raw == "겨울연~1".encode("cp949") + b"MP4"
    assert got["겨울연가 1화.mp4"].display() == "겨울연~1.MP4"
    assert got["a+b[c].txt"].display() == "A_B_C_~1.TXT"
    assert got["...dots.txt"].display() == "DOTS~1.TXT"
    assert got["x.y.jpeg"].display() == "XY~1.JPE"
    assert got["겨울연가 1화.mp4"].lfn  # non-ASCII names always keep their long name


def test_code_page_without_hangul_gives_underscores() -> None:
    """Under a code page that lacks Hangul (CP437), each syllable becomes one '_'."""
    got = assign_short_names(["겨울연가 1화.mp4"], codepage="cp437")
    assert got["겨울연가 1화.mp4"].display("cp437") == "____1_~1.MP4"


def _cp949_lead(ch: str) -> int:
    try:
        return ch.encode("cp949")[0]
    except UnicodeEncodeError:
        return 0


def test_first_byte_e5_is_stored_as_05() -> None:
    """A short name whose first OEM byte is E5h (a Hanja under CP949) is stored with 05h."""
    syllable = next(chr(c) for c in range(0x4E00, 0x9FA6) if _cp949_lead(chr(c)) == 0xE5)
    got = assign_short_names([f"{syllable}가나다라.txt"])
    raw = got[f"{syllable}가나다라.txt"].raw
    assert raw[0] == 0x05 and is_valid_short(raw)
    assert got[f"{syllable}가나다라.txt"].display().startswith(syllable)


def _reference_checksum(short11: bytes) -> int:
    value = 0
    for byte in short11:
        rotated = ((value >> 1) | (value << 7)) & 0xFF
        value = (rotated + byte) % 256
    return value


def test_lfn_checksum_matches_the_rotate_right_definition() -> None:
    """The checksum is fatgen103's rotate-right-and-add over the 11 name bytes."""
    for raw in (b"README  TXT", b"____1_~1MP4", b"A          ", b"~~~~~~~~~~~"):
        assert lfn_checksum(raw) == _reference_checksum(raw)
    with pytest.raises(ValueError):
        lfn_checksum(b"short")


_ALPHABET = "abcXYZ0189 .-_~+[]" + "가나다한글영화" + "中文字" + "éß"
_names = st.text(alphabet=_ALPHABET, min_size=1, max_size=24).map(lambda n: n.rstrip(" .") or "x")


def _portable(name: str) -> bool:
    try:
        check_component(name, name)
    except NameNotAllowedError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.lists(_names.filter(_portable), max_size=40, unique_by=fold_case))
def test_generated_short_names_are_valid_and_unique(names: list[str]) -> None:
    """Any directory of portable names gets well-formed 8.3 names, unique within it."""
    got = assign_short_names(names)
    assert set(got) == set(names)
    raws = [s.raw for s in got.values()]
    assert len(set(raws)) == len(raws)
    for name, short in got.items():
        assert is_valid_short(short.raw), (name, short)
        assert short.lfn == (native_short_name(name) is None)
        if short.lfn:
            assert short.case_bits == 0
    assert assign_short_names(names) == got  # deterministic
