"""Payload hygiene at import: junk names (any letter case), file metadata that names people,
places, devices or dates (real files, read by ExifTool), and the swapped-parent race."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fdffd.errors import PayloadError
from fdffd.payload import (
    ImportPolicy,
    SourceEntry,
    add_profile,
    classify,
    import_directory,
    junk_reason,
    open_profile,
    plan_import,
)
from fdffd.payload import exiftool as exiftool_mod
from fdffd.payload import importer as importer_mod

from .cli_util import fdffctl, write_config
from .payload_util import (
    JPEG,
    docx_bytes,
    exiftool_write,
    make_tree,
    mp4_bytes,
    need_exiftool,
    pdf_bytes,
    snapshot,
)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "payloads"


def refused(store: Path, src: Path, policy: ImportPolicy | None = None) -> str:
    """Import must raise PayloadError and leave ``store`` exactly as it was."""
    before = snapshot(store)
    with pytest.raises(PayloadError) as info:
        add_profile(store, "default", src, policy=policy)
    assert snapshot(store) == before
    return str(info.value)


# --- junk names -------------------------------------------------------------------------

JUNK = {
    "Thumbs.db": "thumbnail cache",
    "THUMBS.DB": "thumbnail cache",
    "thumbs.db": "thumbnail cache",
    "Desktop.INI": "folder settings",
    "ehthumbs.db": "Media Center thumbnail cache",
    "EHTHUMBS_VISTA.DB": "Media Center thumbnail cache",
    "__MACOSX/photo.jpg": "resource forks a Finder zip carries",
    ".AppleDouble/x": "resource-fork folder",
    ".Trash-1000/files/old.txt": "trash on a drive",
    "~$report.docx": "Office owner file",
    ".~lock.report.odt#": "LibreOffice lock file",
    "Shortcut to lessons.LNK": "Windows shortcut",
    ".DS_Store": "Finder's folder settings",
    ".ds_store": "Finder's folder settings",
    "._겨울연가.mp4": "AppleDouble file",
    "$Recycle.Bin/S-1-5-21/x": "recycle bin",
    "System Volume Information/IndexerVolumeGuid": "restore points",
    ".Spotlight-V100/store.db": "Spotlight index",
    ".git/config": "git repository",
    "lost+found/#1234": "filesystem check recovered",
    ".lesson.txt.swp": "vim swap file",
    "RECYCLER/x": "recycle bin",
    "AlbumArt_{8E4F}_Large.jpg": "album art cache",
}


@pytest.mark.parametrize("rel", sorted(JUNK))
def test_junk_is_refused_in_any_letter_case(tmp_path: Path, rel: str) -> None:
    """Each name on the list, in any letter case, file or folder, is refused by name with
    what it is; the plan stops before anything is read (pure: ``plan_import``)."""
    entries = [SourceEntry("ok.txt", False, 1)]
    parts = rel.split("/")
    entries += [SourceEntry("/".join(parts[: i + 1]), True) for i in range(len(parts) - 1)]
    entries.append(SourceEntry(rel, False, 1))
    with pytest.raises(PayloadError) as info:
        plan_import(tmp_path, entries, profile="default")
    msg = str(info.value)
    assert JUNK[rel] in msg and parts[0] in msg
    assert "delete it" in msg


@pytest.mark.parametrize(
    "name",
    ["thumbs.db.txt", "my.lnk.txt", "desktop.ini.bak", "Trash-1000", "lock.odt", "$5.txt",
     "git-lesson.txt", "macosx.txt", "notes~.txt"],
)  # fmt: skip
def test_names_like_junk_are_content(name: str) -> None:
    assert junk_reason(name) is None


def test_junk_refused_by_a_real_import(tmp_path: Path, store: Path) -> None:
    """Through ``add_profile``: every junk entry listed at once, nothing imported."""
    src = make_tree(
        tmp_path / "src",
        {"lesson.txt": b"x", "THUMBS.DB": b"t", "__MACOSX/._lesson.txt": b"r", "~$x.docx": b"o"},
    )
    msg = refused(store, src)
    assert "3 problems" in msg
    for name in ("THUMBS.DB", "__MACOSX", "~$x.docx"):
        assert name in msg


# --- metadata: the classifier (pure) ----------------------------------------------------


def kinds(tags: dict[str, Any], allow: tuple[str, ...] = ()) -> dict[str, str]:
    return {f.tag: f.kind for f in classify("f", tags, allow)}


def test_classifier_kinds() -> None:
    tags = {
        "SourceFile": "./f",
        "System:FileModifyDate": "2026:01:01 00:00:00+00:00",  # the station's file system
        "File:FileType": "JPEG",
        "Composite:GPSPosition": "37.5 126.9",  # derived: its sources are listed
        "ICC_Profile:DeviceManufacturer": "IEC",  # a colour standard, not a device
        "ICC-header:ProfileDateTime": "1998:02:09 06:49:00",
        "GPS:GPSLatitude": 37.5665,
        "XMP-photoshop:City": "Seoul",
        "IFD0:Artist": "Kim",
        "ID3v2_3:Artist": "BTS",  # a song's performer is content, not its curator
        "XMP-dc:Creator": "Kim",
        "PDF:Creator": "Microsoft Word",  # a PDF's /Creator is a program
        "XMP-xmp:CreatorTool": "Adobe",
        "ExifIFD:BodySerialNumber": "123",
        "Keys:Model": "iPhone 14",
        "ItemList:Encoder": "Lavf60.3.100",
        "Matroska:MuxingApp": "libebml",
        "QuickTime:CreateDate": "2024:05:01 10:00:00",
        "QuickTime:ModifyDate": "0000:00:00 00:00:00",  # no date
        "ZIP:ZipModifyDate": "1980:01:01 00:00:00",  # the zip epoch: no date
        "ExifIFD:DateTimeOriginal": "2024:05:01 10:00:00",
        "ExifIFD:OffsetTime": "+09:00",
        "XMP-xmpMM:DocumentID": "xmp.did:1234",
        "XMP-xmpMM:PreservedFileName": "IMG_2024.jpg",
        "IFD0:ImageDescription": "A lesson",  # content
        "ExifIFD:ExposureTime": 0.01,
        "IFD0:Make": "",  # empty
    }
    assert kinds(tags) == {
        "GPS:GPSLatitude": "place",
        "XMP-photoshop:City": "place",
        "IFD0:Artist": "person",
        "XMP-dc:Creator": "person",
        "PDF:Creator": "software",
        "XMP-xmp:CreatorTool": "software",
        "ExifIFD:BodySerialNumber": "device",
        "Keys:Model": "device",
        "ItemList:Encoder": "software",
        "Matroska:MuxingApp": "software",
        "QuickTime:CreateDate": "date",
        "ExifIFD:DateTimeOriginal": "date",
        "ExifIFD:OffsetTime": "date",
        "XMP-xmpMM:DocumentID": "identifier",
        "XMP-xmpMM:PreservedFileName": "identifier",
    }
    allowed = kinds(tags, allow=("pdf:creator", "Encoder"))
    assert "PDF:Creator" not in allowed and "ItemList:Encoder" not in allowed
    assert "XMP-xmp:CreatorTool" in allowed


def test_classifier_values_are_made_safe() -> None:
    (f,) = classify("f", {"PDF:Author": "Kim\x1b[2J\u202eevil" + "x" * 200})
    assert "\x1b" not in f.value and "\u202e" not in f.value and len(f.value) <= 60


# --- metadata: real files ---------------------------------------------------------------


def _jpeg_with_gps(path: Path) -> Path:
    path.write_bytes(JPEG)
    exiftool_write(
        path,
        "-GPSLatitude=37.5665",
        "-GPSLatitudeRef=N",
        "-GPSLongitude=126.978",
        "-GPSLongitudeRef=E",
        "-Make=Samsung",
        "-Model=SM-G991N",
        "-SerialNumber=R58N1234567",
        "-DateTimeOriginal=2024:05:01 10:00:00",
    )
    return path


def _mp4_tagged(path: Path) -> Path:
    path.write_bytes(mp4_bytes())
    exiftool_write(
        path,
        "-QuickTime:CreateDate=2024:05:01 10:00:00",
        "-ItemList:Encoder=Lavf60.3.100",
        "-Keys:GPSCoordinates=37.5665, 126.978, 0",
    )
    return path


CASES = {
    "photo.jpg": (_jpeg_with_gps, ["GPS:GPSLatitude", "ExifIFD:SerialNumber", "IFD0:Model"]),
    "book.pdf": (
        lambda p: p.write_bytes(pdf_bytes("/Author (Kim Min-jun) /CreationDate (D:20240501)")),
        ["PDF:Author", "PDF:CreateDate"],
    ),
    "film.mp4": (_mp4_tagged, ["QuickTime:CreateDate", "ItemList:Encoder", "Keys:GPSCoordinates"]),
    "notes.docx": (lambda p: p.write_bytes(docx_bytes("Kim Min-jun")), ["XMP-dc:Creator"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_metadata_is_refused(tmp_path: Path, store: Path, name: str) -> None:
    """A file whose metadata names a person, a place, a device or a date is refused; the
    message names the file and every such tag; nothing is imported."""
    need_exiftool()
    make, tags = CASES[name]
    src = make_tree(tmp_path / "src", {"clean.txt": b"plain text"})
    (src / "자료").mkdir()
    make(src / "자료" / name)
    msg = refused(store, src)
    assert f"자료/{name}:" in msg
    for tag in tags:
        assert tag in msg
    assert "clean.txt" not in msg
    assert 'payload.metadata = "refuse"' in msg


CLEAN = {
    "photo.jpg": lambda p: p.write_bytes(JPEG),
    "book.pdf": lambda p: p.write_bytes(pdf_bytes()),
    "film.mp4": lambda p: p.write_bytes(mp4_bytes(created=0)),
    "notes.docx": lambda p: p.write_bytes(docx_bytes(None)),
}


def test_clean_files_are_imported(tmp_path: Path, store: Path) -> None:
    """The same kinds of file without such metadata import (zero dates are no dates)."""
    need_exiftool()
    src = make_tree(tmp_path / "src", {"random.bin": os.urandom(4096)})
    for name, make in CLEAN.items():
        make(src / name)
    result = import_directory(store, "default", src)
    assert len(result.manifest.files) == 5 and not result.findings


def test_cleaned_with_exiftool_is_imported(tmp_path: Path, store: Path) -> None:
    """What a curator does: ``exiftool -all=`` on the photo, then the import takes it."""
    need_exiftool()
    src = tmp_path / "src"
    src.mkdir()
    photo = _jpeg_with_gps(src / "photo.jpg")
    assert "GPS:GPSLatitude" in refused(store, src)
    exiftool_write(photo, "-all=")
    assert add_profile(store, "default", src).files[0].path == "photo.jpg"


def test_warn_lists_and_imports(tmp_path: Path, store: Path) -> None:
    """``metadata = "warn"``: every finding is returned and the import goes on; the
    imported bytes are the source's (nothing is stripped)."""
    need_exiftool()
    src = tmp_path / "src"
    src.mkdir()
    photo = _jpeg_with_gps(src / "photo.jpg")
    result = import_directory(store, "default", src, policy=ImportPolicy(metadata="warn"))
    found = {f.tag: f.value for f in result.findings}
    assert found["ExifIFD:SerialNumber"] == "R58N1234567"
    assert found["GPS:GPSLatitude"] == "37.5665"
    with open_profile(store, "default") as p:
        assert (p.files_root / "photo.jpg").read_bytes() == photo.read_bytes()


def test_allowed_tags_pass(tmp_path: Path, store: Path) -> None:
    need_exiftool()
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(pdf_bytes("/Producer (pdfTeX-1.40.25)"))
    assert "PDF:Producer" in refused(store, src)
    policy = ImportPolicy(metadata_allow=("pdf:producer",))
    assert add_profile(store, "default", src, policy=policy).files[0].path == "book.pdf"


def test_cli_lists_metadata(tmp_path: Path) -> None:
    """``fdffctl payload add`` exits 2 naming file and tags; with ``metadata = "warn"`` it
    imports and prints them as a warning."""
    need_exiftool()
    src = tmp_path / "src"
    src.mkdir()
    (src / "book.pdf").write_bytes(pdf_bytes("/Author (Kim Min-jun)"))
    cfg = write_config(tmp_path)
    run = fdffctl("payload", "add", "books", str(src), "--config", str(cfg))
    assert run.code == 2
    assert "book.pdf: PDF:Author = 'Kim Min-jun' (person)" in run.stderr
    cfg = write_config(tmp_path, payload={"metadata": "warn"})
    run = fdffctl("payload", "add", "books", str(src), "--config", str(cfg))
    assert run.code == 0, run.stderr
    assert "warning: 1 file(s) hold metadata" in run.stdout and "PDF:Author" in run.stdout


def test_missing_exiftool_is_a_clear_refusal(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {"a.txt": b"a"})
    monkeypatch.setitem(exiftool_mod._ENV, "PATH", str(tmp_path / "no-bin"))
    assert "exiftool is not installed" in refused(store, src)


# --- the swapped parent directory -------------------------------------------------------

_IN_ACCESS, _IN_OPEN = 0x1, 0x20


@contextmanager
def opens_under(directory: Path) -> Iterator[list[str]]:
    """Every open or read of ``directory`` or a file in it while the block runs (inotify),
    as the names the kernel reports ("" for the directory itself)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    seen: list[str] = []
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(directory), _IN_OPEN | _IN_ACCESS) >= 0
        yield seen
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            data = b""
        pos = 0
        while pos < len(data):
            _wd, _mask, _cookie, size = struct.unpack_from("iIII", data, pos)
            seen.append(data[pos + 16 : pos + 16 + size].rstrip(b"\0").decode())
            pos += 16 + size
    finally:
        os.close(fd)


@pytest.fixture
def race(tmp_path: Path) -> tuple[Path, Path]:
    """A source whose 'lessons' folder has a twin outside it, same names, same sizes."""
    src = make_tree(tmp_path / "src", {"lessons/one.txt": b"lesson one", "top.txt": b"top"})
    outside = make_tree(tmp_path / "outside", {"one.txt": b"SECRET !!"})
    os.utime(outside / "one.txt", ns=(0, os.stat(src / "lessons/one.txt").st_mtime_ns))
    return src, outside


def _swap_after_scan(monkeypatch: pytest.MonkeyPatch, swap: Any) -> None:
    """Run ``swap`` right after the real scan returns, before the copy (the race window)."""
    real_scan = importer_mod.scan_source

    def scan_then_swap(*args: Any, **kwargs: Any) -> Any:
        found = real_scan(*args, **kwargs)
        swap()
        return found

    monkeypatch.setattr(importer_mod, "scan_source", scan_then_swap)


def test_parent_swapped_for_a_symlink_reads_nothing_outside(
    tmp_path: Path, store: Path, race: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the scan and the copy the 'lessons' folder is renamed away and a symbolic
    link to an outside folder put in its place.  A copy by path would now read the outside
    file (checked below); the import refuses, names the folder, and the kernel saw no open
    of anything outside."""
    src, outside = race

    def swap() -> None:
        os.rename(src / "lessons", tmp_path / "lessons.moved")
        os.symlink(outside, src / "lessons")

    _swap_after_scan(monkeypatch, swap)
    before = snapshot(store)
    with opens_under(outside) as seen, pytest.raises(PayloadError) as info:
        add_profile(store, "default", src)
    assert seen == []
    assert snapshot(store) == before
    msg = str(info.value)
    assert f"{src / 'lessons'}: was replaced after the source was scanned" in msg
    assert "symbolic link" in msg and "nothing outside the source was read" in msg
    assert (src / "lessons" / "one.txt").read_bytes() == b"SECRET !!"  # a path would read it


def test_parent_swapped_for_another_directory_is_refused(
    tmp_path: Path, store: Path, race: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder replaced by a real directory with the same names (a bind mount or a
    rename would do the same): not the directory scanned, refused."""
    src, outside = race

    def swap() -> None:
        os.rename(src / "lessons", tmp_path / "lessons.moved")
        os.rename(outside, src / "lessons")

    _swap_after_scan(monkeypatch, swap)
    msg = refused(store, src)
    assert "it is another directory now" in msg


def test_root_swapped_keeps_reading_the_scanned_tree(
    tmp_path: Path, store: Path, race: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source directory itself renamed away and replaced by a link to the outside:
    the import reads on through the descriptor it scanned, so it imports what it scanned
    and opens nothing outside."""
    src, outside = race

    def swap() -> None:
        os.rename(src, tmp_path / "src.moved")
        os.symlink(outside, src)

    _swap_after_scan(monkeypatch, swap)
    with opens_under(outside) as seen:
        manifest = add_profile(store, "default", src)
    assert seen == []
    assert [f.path for f in manifest.files] == ["lessons/one.txt", "top.txt"]
    with open_profile(store, "default") as p:
        assert (p.files_root / "lessons/one.txt").read_bytes() == b"lesson one"


def test_file_swapped_for_a_symlink_is_refused(
    tmp_path: Path, store: Path, race: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, outside = race

    def swap() -> None:
        os.rename(src / "top.txt", tmp_path / "top.moved")
        os.symlink(outside / "one.txt", src / "top.txt")

    _swap_after_scan(monkeypatch, swap)
    with opens_under(outside) as seen:
        msg = refused(store, src)
    assert seen == []
    assert "top.txt: the file changed while it was being imported" in msg
    assert "symbolic link" in msg
