"""Payload profiles: import, list, verify, pin, prune, and every refusal, on real files."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdffd.cli.payload_text import (
    format_added,
    format_list,
    format_pruned,
    format_verify,
    manifest_summary,
)
from fdffd.errors import FileTooLargeError, NameNotAllowedError, PayloadError
from fdffd.imaging.names import fold_case
from fdffd.payload import (
    FOUR_GIB,
    Manifest,
    SourceEntry,
    add_profile,
    check_before_job,
    list_profiles,
    open_profile,
    plan_import,
    prune_profile,
    verify_profile,
)
from fdffd.payload import digest as digest_mod
from fdffd.payload.manifest import canonical_json

from .cli_util import fdffctl, write_config

KOREAN = "영화/겨울연가 1화.mp4"

TREE: dict[str, bytes] = {
    KOREAN: b"winter sonata " * 1000,
    "영화/겨울연가 2화.mp4": b"episode two",
    "책/红楼梦 第一回.txt": "满纸荒唐言".encode() * 50,
    "courses/English for beginners/lesson 01.pdf": b"%PDF-1.4 lesson one",
    "courses/English for beginners/empty notes.txt": b"",
    "a/b/c/d/e/f/g/h/deep file.txt": b"deep",
    "README.txt": b"read me",
}
EMPTY_DIRS = ["빈 폴더", "courses/English for beginners/homework", "a/b/c/d/e/f/g/h/i"]
ALL_DIRS = sorted({
    "a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/c/d/e/f", "a/b/c/d/e/f/g",
    "a/b/c/d/e/f/g/h", "a/b/c/d/e/f/g/h/i", "courses", "courses/English for beginners",
    "courses/English for beginners/homework", "영화", "책", "빈 폴더",
})


def make_tree(root: Path, files: dict[str, bytes], dirs: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for d in dirs or []:
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (nothing when it does not exist)."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")} | {"."}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "payloads"


@pytest.fixture
def imported(tmp_path: Path, store: Path) -> Manifest:
    src = make_tree(tmp_path / "src", TREE, EMPTY_DIRS)
    return add_profile(store, "default", src)


def refused(
    store: Path, src: Path, exc: type[Exception] = PayloadError, *, name: str = "default",
    filesystem: str = "auto",
) -> str:
    """Import must raise ``exc`` and leave ``store`` exactly as it was; returns the message."""
    before = snapshot(store)
    with pytest.raises(exc) as info:
        add_profile(store, name, src, filesystem=filesystem)
    assert snapshot(store) == before
    return str(info.value)


# --- a good import --------------------------------------------------------------------


def test_import_records_every_file_and_directory(imported: Manifest) -> None:
    """The manifest lists every file (path, size, SHA-256) and every directory, empty ones too."""
    assert imported.profile == "default"
    assert {f.path: (f.size, f.sha256) for f in imported.files} == {
        p: (len(d), sha(d)) for p, d in TREE.items()
    }
    assert list(imported.directories) == ALL_DIRS
    assert [f.path for f in imported.files] == sorted(TREE)
    assert not imported.has_file_of_4gib_or_more


def test_version_directory_is_named_by_the_manifest_hash(store: Path, imported: Manifest) -> None:
    """current -> versions/<sha256 of manifest.json>, and the manifest is canonical JSON."""
    pdir = store / "default"
    assert os.readlink(pdir / "current") == f"versions/{imported.manifest_sha256}"
    raw = (pdir / "versions" / imported.manifest_sha256 / "manifest.json").read_bytes()
    assert sha(raw) == imported.manifest_sha256
    assert raw == canonical_json(json.loads(raw))
    assert json.loads(raw)["schema"] == 1
    assert KOREAN in raw.decode("utf-8")


def test_imported_files_are_plain_copies_with_fixed_modes(store: Path, imported: Manifest) -> None:
    """Files are byte-identical copies with mode 0644; directories have mode 0755."""
    root = store / "default" / "current" / "files"
    for rel, data in TREE.items():
        assert (root / rel).read_bytes() == data
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o644
    for d in ALL_DIRS:
        assert stat.S_IMODE((root / d).stat().st_mode) == 0o755
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def test_list_shows_the_profile(store: Path, imported: Manifest) -> None:
    """list_profiles gives version, files, bytes, directories, created_at and version count."""
    (info,) = list_profiles(store)
    assert info.name == "default"
    assert info.manifest_sha256 == imported.manifest_sha256
    assert info.files == len(TREE)
    assert info.bytes == sum(len(d) for d in TREE.values())
    assert info.directories == len(ALL_DIRS)
    assert info.created_at == imported.created_at
    assert info.versions == 1
    assert info.error is None
    assert "default" in format_list([info])
    json.dumps(info.to_json())


def test_list_of_a_missing_payload_dir_is_empty(tmp_path: Path) -> None:
    """No payload directory means no profiles, and the text says how to import one."""
    assert list_profiles(tmp_path / "nowhere") == []
    assert "fdffctl payload add" in format_list([], tmp_path / "nowhere")


def test_verify_of_a_fresh_import_is_clean(store: Path, imported: Manifest) -> None:
    """verify_profile re-hashes every file and reports a clean profile as clean."""
    report = verify_profile(store, "default")
    assert report.ok
    assert report.files_checked == len(TREE)
    assert report.bytes_checked == sum(len(d) for d in TREE.values())
    assert "clean" in format_verify(report)
    assert report.to_json()["ok"] is True


def test_open_profile_gives_the_tree_for_imaging(store: Path, imported: Manifest) -> None:
    """tree() lists every file (size, absolute source in the version dir) and every dir."""
    with open_profile(store, "default") as prof:
        assert prof.manifest_sha256 == imported.manifest_sha256
        assert prof.root == (store / "default" / "versions" / imported.manifest_sha256).absolute()
        tree = prof.tree()
        assert {f.path: f.source.read_bytes() for f in tree.files} == TREE
        assert all(f.source.is_absolute() and prof.root in f.source.parents for f in tree.files)
        assert all(f.size == len(TREE[f.path]) for f in tree.files)
        assert list(tree.dirs) == ALL_DIRS
        assert prof.total_bytes == tree.total_bytes
        check_before_job(prof)


def test_nfd_names_are_normalised_to_nfc(tmp_path: Path, store: Path) -> None:
    """A decomposed (NFD, as macOS writes) Hangul name is imported under its NFC form."""
    nfd = unicodedata.normalize("NFD", "겨울연가.txt")
    src = make_tree(tmp_path / "src", {nfd: b"x"})
    m = add_profile(store, "p", src)
    assert [f.path for f in m.files] == ["겨울연가.txt"]
    with open_profile(store, "p") as prof:
        assert (prof.files_root / "겨울연가.txt").read_bytes() == b"x"


def test_add_summary_and_json(imported: Manifest) -> None:
    """The add output names the version; its JSON summary is small and serialisable."""
    assert imported.manifest_sha256 in format_added(imported)
    summary = manifest_summary(imported)
    assert summary["files"] == len(TREE)
    json.dumps(summary, ensure_ascii=False)


# --- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("what?.txt", "'?'"),
        ("a:b.txt", "':'"),
        ("CON.txt", "reserved device name"),
        ("lpt1", "reserved device name"),
        ("trailing.", "ends with '.'"),
        ("trailing ", "ends with a space"),
    ],
)
def test_names_fat_cannot_hold_are_refused(
    tmp_path: Path, store: Path, name: str, reason: str
) -> None:
    """A name FAT/exFAT or Windows cannot hold is refused with its path and reason."""
    src = make_tree(tmp_path / "src", {"ok.txt": b"1", f"dir/{name}": b"2"})
    msg = refused(store, src, NameNotAllowedError)
    assert reason in msg
    assert f"dir/{name}" in msg


def test_name_of_256_utf16_units_is_refused(tmp_path: Path) -> None:
    """A 256-unit name (which no Linux source can hold, but NTFS via FUSE can) is refused."""
    with pytest.raises(NameNotAllowedError, match="256 UTF-16 code units"):
        plan_import(tmp_path, [SourceEntry("가" * 256, False, 1)], profile="p")


def test_name_over_255_utf8_bytes_is_refused(tmp_path: Path) -> None:
    """A 100-syllable Korean name fits FAT (100 units) but not a phone's filesystem (300 bytes)."""
    with pytest.raises(NameNotAllowedError, match="300 bytes in UTF-8"):
        plan_import(tmp_path, [SourceEntry("가" * 100, False, 1)], profile="p")


def test_case_collision_is_refused(tmp_path: Path, store: Path) -> None:
    """A.txt and a.txt in one directory are one name on FAT: refused, naming both."""
    src = make_tree(tmp_path / "src", {"A.txt": b"1", "a.txt": b"2"})
    msg = refused(store, src, NameNotAllowedError)
    assert "'A.txt'" in msg and "'a.txt'" in msg and "letter case" in msg


def test_nfc_collision_is_refused(tmp_path: Path, store: Path) -> None:
    """Two names that are equal once normalised to NFC are refused."""
    nfc = "한글.txt"
    src = make_tree(tmp_path / "src", {nfc: b"1", unicodedata.normalize("NFD", nfc): b"2"})
    assert "same name once normalised to Unicode NFC" in refused(store, src, NameNotAllowedError)


def test_symlink_is_refused(tmp_path: Path, store: Path) -> None:
    """A symbolic link in the source is refused, naming it."""
    src = make_tree(tmp_path / "src", {"real.txt": b"1"})
    (src / "link.txt").symlink_to("real.txt")
    msg = refused(store, src)
    assert "link.txt: is a symbolic link" in msg


def test_fifo_is_refused(tmp_path: Path, store: Path) -> None:
    """A named pipe in the source is refused as a special file (and is never opened)."""
    src = make_tree(tmp_path / "src", {"real.txt": b"1"})
    os.mkfifo(src / "pipe")
    assert "pipe: is a named pipe (FIFO)" in refused(store, src)


def test_socket_is_refused(tmp_path: Path, store: Path) -> None:
    """A unix socket in the source is refused as a special file."""
    src = make_tree(tmp_path / "src", {"real.txt": b"1"})
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(src / "sock"))
        assert "sock: is a socket" in refused(store, src)


def test_os_junk_files_are_refused(tmp_path: Path, store: Path) -> None:
    """.DS_Store and AppleDouble files would tell a reader where the payload came from."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1", ".DS_Store": b"x", "._a.txt": b"y"})
    msg = refused(store, src)
    assert "2 problems" in msg and ".DS_Store" in msg and "._a.txt" in msg


def test_every_problem_is_reported_at_once(tmp_path: Path, store: Path) -> None:
    """Several problems give one error that lists each with its path."""
    src = make_tree(tmp_path / "src", {"CON.txt": b"1", "bad?.txt": b"2", "ok.txt": b"3"})
    (src / "link").symlink_to("ok.txt")
    with pytest.raises(PayloadError) as info:
        add_profile(store, "p", src)
    assert len(info.value.fields["problems"]) == 3
    assert "3 problems" in str(info.value)
    assert not store.exists()


def test_file_of_4gib_refused_on_fat32_accepted_on_auto(tmp_path: Path, store: Path) -> None:
    """A sparse 4 GiB file is refused for FAT32 and accepted for auto (which means exFAT)."""
    src = make_tree(tmp_path / "src", {"small.txt": b"1"})
    with open(src / "big.mkv", "wb") as fh:
        fh.truncate(FOUR_GIB)
        fh.seek(FOUR_GIB // 2)
        fh.write(b"data in the middle")
    msg = refused(store, src, FileTooLargeError, filesystem="fat32")
    assert "big.mkv" in msg and "FAT32" in msg
    m = add_profile(store, "big", src, filesystem="auto")
    assert m.has_file_of_4gib_or_more
    (big,) = [f for f in m.files if f.path == "big.mkv"]
    assert big.size == FOUR_GIB
    with open_profile(store, "big") as prof:
        assert prof.has_file_of_4gib_or_more
        check_before_job(prof)
        copy = prof.files_root / "big.mkv"
        assert copy.stat().st_blocks * 512 < 1 << 20  # holes stayed holes


def test_sparse_files_hash_and_copy_like_their_bytes(tmp_path: Path, store: Path) -> None:
    """Holes are hashed as the zeros they read as, and stay holes in the copy."""
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as fh:
        fh.write(b"head")
        fh.seek(20 << 20)
        fh.write(b"middle")
        fh.truncate(48 << 20)
    data = (src / "sparse.bin").read_bytes()
    m = add_profile(store, "p", src)
    assert m.files[0].sha256 == sha(data)
    with open_profile(store, "p") as prof:
        assert (prof.files_root / "sparse.bin").read_bytes() == data
    assert verify_profile(store, "p").ok


def test_empty_source_is_refused(tmp_path: Path, store: Path) -> None:
    """A source with no files (even with empty directories) is refused."""
    src = make_tree(tmp_path / "src", {}, ["only", "empty/dirs"])
    assert "holds no files" in refused(store, src)


def test_missing_source_is_refused(tmp_path: Path, store: Path) -> None:
    """A source that does not exist is refused, saying so."""
    assert "does not exist" in refused(store, tmp_path / "nope")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "a b", "..", "x" * 65, "한글"])
def test_bad_profile_names_are_refused(tmp_path: Path, store: Path, name: str) -> None:
    """Profile names are [A-Za-z0-9._-]+, at most 64 characters, not starting with '.'."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    assert "not a valid profile name" in refused(store, src, name=name)


def test_unreadable_file_leaves_no_trace(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be opened while copying fails the import and removes what was copied."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1", "b.txt": b"2", "c.txt": b"3"})
    real_open = os.open

    def deny(path: str | Path, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        # the copy opens each file by name, relative to its directory's descriptor
        if str(path) == "b.txt" and dir_fd is not None:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", deny)
    msg = refused(store, src)
    assert "b.txt: cannot read: Permission denied" in msg


def test_unreadable_file_is_refused_before_copying(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file without read permission is refused by the scan, before anything is copied."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1", "b.txt": b"2"})
    (src / "a.txt").chmod(0)
    if os.geteuid() == 0:  # root reads anything: let access() answer as for anyone else
        real_access = os.access
        monkeypatch.setattr(  # the scan asks by name, relative to the directory's descriptor
            os, "access", lambda p, m, **kw: m != os.R_OK and real_access(p, m, **kw)
            if str(p) == "a.txt" else real_access(p, m, **kw),
        )
    assert "cannot be read" in refused(store, src)


def test_file_changed_during_import_is_refused(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that grows while it is copied fails the import with a clear message."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1" * 5000})
    real_stream = digest_mod.stream

    def growing(fd: int, size: int, out: int | None) -> tuple[str, str]:
        with open(src / "a.txt", "ab") as fh:
            fh.write(b"more")
        return real_stream(fd, size, out)

    monkeypatch.setattr(digest_mod, "stream", growing)
    assert "changed while it was being imported" in refused(store, src)


def test_failed_reimport_leaves_the_existing_profile_untouched(
    tmp_path: Path, store: Path, imported: Manifest
) -> None:
    """A refused re-import changes nothing in an existing profile."""
    src = make_tree(tmp_path / "src2", {"CON": b"1"})
    refused(store, src, NameNotAllowedError)
    with open_profile(store, "default") as prof:
        assert prof.manifest_sha256 == imported.manifest_sha256


# --- verify ---------------------------------------------------------------------------


def test_verify_names_changed_missing_and_extra(store: Path, imported: Manifest) -> None:
    """verify names a changed, a missing and an extra file, and a missing and an extra dir."""
    root = store / "default" / "versions" / imported.manifest_sha256 / "files"
    (root / KOREAN).write_bytes(b"x" * len(TREE[KOREAN]))  # same size, other bytes
    (root / "README.txt").write_bytes(b"longer than before")
    (root / "책/红楼梦 第一回.txt").unlink()
    (root / "영화/extra.mp4").write_bytes(b"?")
    (root / "new dir").mkdir()
    (root / "빈 폴더").rmdir()
    report = verify_profile(store, "default")
    assert not report.ok
    assert {c.path for c in report.changed} == {KOREAN, "README.txt"}
    assert "content differs" in {c.path: c.detail for c in report.changed}[KOREAN]
    assert report.missing_files == ("책/红楼梦 第一回.txt",)
    assert report.extra_files == ("영화/extra.mp4",)
    assert report.missing_dirs == ("빈 폴더",)
    assert report.extra_dirs == ("new dir",)
    text = format_verify(report)
    for needle in (KOREAN, "README.txt", "红楼梦", "extra.mp4", "new dir", "빈 폴더"):
        assert needle in text
    json.dumps(report.to_json(), ensure_ascii=False)


def test_edited_manifest_is_caught(store: Path, imported: Manifest) -> None:
    """A manifest whose bytes no longer match its version name makes open_profile refuse."""
    path = store / "default" / "versions" / imported.manifest_sha256 / "manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"size":4', b'"size":5'))
    with pytest.raises(PayloadError, match="was changed after import"):
        verify_profile(store, "default")


def test_malformed_manifest_names_the_field(store: Path, imported: Manifest) -> None:
    """A malformed manifest (even with a matching hash) is refused naming the bad field."""
    pdir = store / "default"
    data = json.loads((pdir / "current" / "manifest.json").read_bytes())
    data["files"][1]["sha256"] = "not-a-hash"
    raw = canonical_json(data)
    vdir = pdir / "versions" / sha(raw)
    vdir.mkdir()
    (vdir / "manifest.json").write_bytes(raw)
    os.unlink(pdir / "current")
    os.symlink(f"versions/{sha(raw)}", pdir / "current")
    with pytest.raises(PayloadError, match=r"malformed: files\.1\.sha256"), \
            open_profile(store, "default"):
        pass


def test_missing_profile_says_how_to_import(store: Path, imported: Manifest) -> None:
    """Opening a profile that does not exist says where it looked and how to import one."""
    with pytest.raises(PayloadError) as info, open_profile(store, "films"):
        pass
    msg = str(info.value)
    assert f"no payload profile 'films' in {store}" in msg
    assert "fdffctl payload add films DIR" in msg
    assert "default" in msg


# --- versions, pins and prune ---------------------------------------------------------


def test_reimport_makes_a_new_version_and_a_pinned_job_keeps_the_old(
    tmp_path: Path, store: Path, imported: Manifest
) -> None:
    """A re-import during a job publishes a new version; the job still reads its own bytes."""
    with open_profile(store, "default") as old:
        src2 = make_tree(tmp_path / "src2", {KOREAN: b"re-encoded episode"})
        new = add_profile(store, "default", src2)
        assert new.manifest_sha256 != old.manifest_sha256
        (entry,) = [f for f in old.tree().files if f.path == KOREAN]
        assert entry.source.read_bytes() == TREE[KOREAN]
        check_before_job(old)
        with open_profile(store, "default") as fresh:
            assert fresh.manifest_sha256 == new.manifest_sha256
            assert (fresh.files_root / KOREAN).read_bytes() == b"re-encoded episode"
    (info,) = list_profiles(store)
    assert info.versions == 2 and info.manifest_sha256 == new.manifest_sha256


def test_prune_skips_a_version_in_use(tmp_path: Path, store: Path, imported: Manifest) -> None:
    """prune keeps the current version and any version a job has pinned, removes the rest."""
    v1 = imported.manifest_sha256
    v2 = add_profile(store, "default", make_tree(tmp_path / "s2", {"two.txt": b"2"}))
    with open_profile(store, "default") as pinned:  # pins v2
        v3 = add_profile(store, "default", make_tree(tmp_path / "s3", {"three.txt": b"3"}))
        report = prune_profile(store, "default", keep=1)
        assert report.removed == (v1,)
        assert report.in_use == (v2.manifest_sha256,)
        assert report.current == v3.manifest_sha256
        assert (pinned.files_root / "two.txt").read_bytes() == b"2"
        assert "in use" in format_pruned(report)
    report = prune_profile(store, "default", keep=1)
    assert report.removed == (v2.manifest_sha256,)
    versions = os.listdir(store / "default" / "versions")
    assert versions == [v3.manifest_sha256]
    assert sorted(os.listdir(store / "default" / "in-use")) == [f"{v3.manifest_sha256}.lock"]
    assert verify_profile(store, "default").ok


def test_prune_keep_two_keeps_the_newest_other(
    tmp_path: Path, store: Path, imported: Manifest
) -> None:
    """keep=2 keeps the current version and the newest older one."""
    from datetime import UTC, datetime

    v2 = add_profile(store, "default", make_tree(tmp_path / "s2", {"2.txt": b"2"}),
                     now=datetime(2099, 1, 1, tzinfo=UTC))
    v3 = add_profile(store, "default", make_tree(tmp_path / "s3", {"3.txt": b"3"}),
                     now=datetime(2099, 1, 2, tzinfo=UTC))
    report = prune_profile(store, "default", keep=2)
    assert report.removed == (imported.manifest_sha256,)
    assert set(report.kept) == {v2.manifest_sha256, v3.manifest_sha256}


def test_open_profile_can_pin_an_older_version(
    tmp_path: Path, store: Path, imported: Manifest
) -> None:
    """open_profile(version=...) pins a stored version that is no longer current."""
    add_profile(store, "default", make_tree(tmp_path / "s2", {"2.txt": b"2"}))
    with open_profile(store, "default", version=imported.manifest_sha256) as prof:
        assert len(prof.manifest.files) == len(TREE)


# --- check_before_job -----------------------------------------------------------------


def test_check_before_job_catches_a_truncated_file(store: Path, imported: Manifest) -> None:
    """A payload file truncated after import fails the job before imaging, naming the file."""
    with open_profile(store, "default") as prof:
        os.truncate(prof.files_root / KOREAN, 10)
        with pytest.raises(PayloadError) as info:
            check_before_job(prof)
    msg = str(info.value)
    assert KOREAN in msg and "is 10 bytes, its manifest says" in msg
    assert "fdffctl payload verify default" in msg


def test_check_before_job_catches_a_missing_file(store: Path, imported: Manifest) -> None:
    """A payload file deleted after import fails the job before imaging."""
    with open_profile(store, "default") as prof:
        (prof.files_root / "README.txt").unlink()
        with pytest.raises(PayloadError, match=r"'README\.txt' .* is missing"):
            check_before_job(prof)


# --- round trip -----------------------------------------------------------------------

_CHARS = "abcXYZ019 -_()'" + "가나다라한글영화책" + "红楼梦书中文" + "éß"
_component = st.text(alphabet=_CHARS, min_size=1, max_size=10).filter(
    lambda s: not s.endswith((" ", ".")) and s.strip() != ""
)


@st.composite
def payload_trees(draw: st.DrawFn) -> tuple[dict[str, bytes], list[str]]:
    """Files (names end in .txt) and directories (no dot in their names): no file/dir clash."""
    dirs = draw(st.lists(st.lists(_component, min_size=1, max_size=3), max_size=5))
    dir_paths = ["/".join(d) for d in dirs]
    files: dict[str, bytes] = {}
    seen: set[str] = set()
    n = draw(st.integers(1, 8))
    for _ in range(n):
        parent = draw(st.sampled_from(["", *dir_paths]))
        name = draw(_component) + ".txt"
        path = f"{parent}/{name}" if parent else name
        if fold_case(path) in seen:
            continue
        seen.add(fold_case(path))
        files[path] = draw(st.binary(max_size=3000))
    # drop directories whose folded path clashes with another spelling
    kept: dict[str, str] = {}
    for d in dir_paths:
        for i in range(1, d.count("/") + 2):
            sub = "/".join(d.split("/")[:i])
            kept.setdefault(fold_case(sub), sub)
    ok_dirs = [d for d in dir_paths if all(
        kept[fold_case("/".join(d.split("/")[:i]))] == "/".join(d.split("/")[:i])
        for i in range(1, d.count("/") + 2)
    )]
    files = {p: b for p, b in files.items() if "/" not in p or any(
        p.rsplit("/", 1)[0] == d for d in ok_dirs)}
    if not files:
        files = {"only.txt": b"1"}
    return files, ok_dirs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload_trees())
def test_valid_trees_round_trip(tree: tuple[dict[str, bytes], list[str]]) -> None:
    """Any tree of valid names imports to exactly those files, dirs, sizes and hashes."""
    files, dirs = tree
    with tempfile.TemporaryDirectory() as tmp:
        src = make_tree(Path(tmp) / "src", files, dirs)
        store = Path(tmp) / "payloads"
        m = add_profile(store, "p", src)
        want_dirs = set()
        for p in [*dirs, *(f.rsplit("/", 1)[0] for f in files if "/" in f)]:
            parts = p.split("/")
            want_dirs |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        with open_profile(store, "p") as prof:
            t = prof.tree()
            assert {f.path: (f.size, f.source.read_bytes()) for f in t.files} == {
                p: (len(b), b) for p, b in files.items()
            }
            assert set(t.dirs) == want_dirs
        assert {f.path: f.sha256 for f in m.files} == {p: sha(b) for p, b in files.items()}
        assert verify_profile(store, "p").ok


def test_manifest_round_trips_through_its_canonical_bytes(imported: Manifest) -> None:
    """Parsing the canonical bytes gives the same manifest and the same hash."""
    from fdffd.payload import parse_manifest

    again = parse_manifest(imported.canonical_bytes(), profile="default", where="test")
    assert again == imported and again.manifest_sha256 == imported.manifest_sha256



def test_leftovers_of_a_killed_import_are_cleaned(
    tmp_path: Path, store: Path, imported: Manifest
) -> None:
    """A staging dir left by an import killed midway is removed by the next import."""
    (store / "default" / ".import-killed" / "files").mkdir(parents=True)
    add_profile(store, "default", make_tree(tmp_path / "s2", {"2.txt": b"2"}))
    assert not (store / "default" / ".import-killed").exists()


def test_list_shows_a_broken_profile_with_its_error(store: Path, imported: Manifest) -> None:
    """A profile whose current version is gone is listed with the reason, not a crash."""
    os.unlink(store / "default" / "current")
    (info,) = list_profiles(store)
    assert info.manifest_sha256 is None and "no current version" in (info.error or "")
    assert "no current version" in format_list([info])


def test_reimporting_an_unchanged_tree_keeps_the_version(
    tmp_path: Path, store: Path, imported: Manifest
) -> None:
    """Importing the same tree again makes no new version: the version id stays the same."""
    again = add_profile(store, "default", tmp_path / "src")
    assert again.manifest_sha256 == imported.manifest_sha256
    assert len(os.listdir(store / "default" / "versions")) == 1
    assert [p.name for p in (store / "default").iterdir() if p.name.startswith(".import")] == []


# --- the directories an import creates ------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask of an operator's shell, under which a plain mkdir makes 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("umask_022")
def test_payload_add_creates_the_state_dir_0700(tmp_path: Path) -> None:
    """fdffctl payload add on a new station creates the state dir (the payload dir's parent
    by default) 0700, as the service unit would: whoever creates it first, it is private."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    state = tmp_path / "var" / "lib" / "fdffd"
    cfg = write_config(
        tmp_path,
        keys=False,
        station={"state_dir": str(state), "payload_dir": str(state / "payloads")},
    )
    run = fdffctl("payload", "add", "films", str(src), "--config", str(cfg))
    assert run.code == 0, run.stderr
    assert mode(state) == 0o700
    assert mode(state / "payloads" / "films") == 0o755  # payload trees stay readable


@pytest.mark.usefixtures("umask_022")
def test_add_profile_makes_missing_parents_0700_and_conjures_no_state_dir(
    tmp_path: Path,
) -> None:
    """add_profile makes the directories missing above payload_dir 0700; with the payload
    dir outside the state dir, fdffctl payload add leaves the state dir uncreated."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    add_profile(tmp_path / "a" / "b" / "payloads", "p", src)
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    cfg = write_config(
        tmp_path,
        keys=False,
        station={"state_dir": str(tmp_path / "state"), "payload_dir": str(tmp_path / "pl")},
    )
    assert fdffctl("payload", "add", "p", str(src), "--config", str(cfg)).code == 0
    assert not (tmp_path / "state").exists()


def test_payload_dir_under_a_file_is_a_usage_error(tmp_path: Path) -> None:
    """A payload dir below a regular file: exit 2 naming station.payload_dir, no traceback,
    and nothing imported."""
    src = make_tree(tmp_path / "src", {"a.txt": b"1"})
    (tmp_path / "file").write_text("not a directory")
    cfg = write_config(tmp_path, station={"payload_dir": str(tmp_path / "file" / "payloads")})
    run = fdffctl("payload", "add", "p", str(src), "--config", str(cfg))
    assert run.code == 2, run.stderr
    assert "station.payload_dir" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "file").read_text() == "not a directory"
