"""Signed content: bundles exported, tampered with, imported on a second station; the
signature rule at import, before a job and at daemon start; curators' keys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fdffd.config import PayloadSection, config_from_dict
from fdffd.errors import ConfigError, PayloadError, UsageError
from fdffd.imaging.plan import ID_BYTES, build_plan
from fdffd.imaging.types import Bytes, FileData, Zeros
from fdffd.payload import (
    FileRecord,
    ImportPolicy,
    Manifest,
    Trust,
    add_profile,
    check_before_job,
    export_bundle,
    import_bundle,
    load_private_key,
    open_profile,
    verify_profile,
)
from fdffd.payload.digest import hash_file
from fdffd.payload.signing import SIGNATURE_FILE, key_text

from .cli_util import fdffctl, write_config
from .payload_util import make_tree, members, rewrite_bundle, snapshot, write_bundle

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TREE = {
    "영화/겨울연가 1화.mp4": os.urandom(300_000),
    "책/红楼梦 第一回.txt": "满纸荒唐言".encode() * 50,
    "courses/English/lesson 01.txt": b"lesson one",
    "courses/English/empty.txt": b"",
    "README.txt": b"read me first",
}
EMPTY_DIRS = ["빈 폴더", "courses/English/homework"]

#: a fixed base date for the timestamps, so two plans of the same draws are comparable
BASE_TIME = datetime(2024, 5, 17, 14, 3, 21)


def pub_text(key: Ed25519PrivateKey) -> str:
    return key_text(key.public_key())


def trusting(*keys: Ed25519PrivateKey, required: bool = True) -> ImportPolicy:
    return ImportPolicy(
        trust=Trust({pub_text(k): k.public_key() for k in keys}, require_signed=required)
    )


def settings(*keys: Ed25519PrivateKey, required: bool = True) -> PayloadSection:
    return PayloadSection(trusted_keys=[pub_text(k) for k in keys], require_signed=required)


def write_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def curator() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def station_a(tmp_path: Path) -> Path:
    """The curator's station: the profile 'films' imported from a directory."""
    src = make_tree(tmp_path / "src", TREE, EMPTY_DIRS)
    sparse = src / "courses" / "sparse.img"
    with open(sparse, "wb") as f:  # 8 MiB, one byte of data: holes stay holes
        f.truncate(8 << 20)
        f.seek(4 << 20)
        f.write(b"x")
    store = tmp_path / "a" / "payloads"
    add_profile(store, "films", src, now=NOW)
    return store


@pytest.fixture
def bundle(tmp_path: Path, station_a: Path, curator: Ed25519PrivateKey) -> Path:
    out = tmp_path / "films.fdffd"
    export_bundle(station_a, "films", out, key=curator)
    return out


@pytest.fixture
def station_b(tmp_path: Path) -> Path:
    """A second station, already holding another profile (which must stay untouched)."""
    store = tmp_path / "b" / "payloads"
    add_profile(store, "other", make_tree(tmp_path / "other", {"x.txt": b"x"}), now=NOW)
    return store


def refused(store: Path, bundle: Path, policy: ImportPolicy) -> str:
    """Import must raise PayloadError and leave ``store`` byte for byte as it was."""
    before = snapshot(store)
    with pytest.raises(PayloadError) as info:
        import_bundle(store, bundle, policy=policy)
    assert snapshot(store) == before
    return str(info.value)


# --- a good bundle ----------------------------------------------------------------------


def _plan_view(store: Path, usable: int, fs: str) -> list[tuple[int, int, str, object]]:
    """The imaging plan of the current 'films' version for fixed draws: each extent's
    place, and what goes there (bytes, or a file's path, offset and the bytes read)."""
    ids = bytes(range(ID_BYTES))
    with open_profile(store, "films") as p:
        plan = build_plan(
            usable, p.tree(), filesystem=fs, label="FILMS", ids=ids, base_time=BASE_TIME
        )
        out: list[tuple[int, int, str, object]] = []
        for e in plan.extents:
            src = e.source
            if isinstance(src, Bytes):
                out.append((e.offset, e.length, "bytes", src.data))
            elif isinstance(src, FileData):
                with open(src.entry.source, "rb") as f:
                    f.seek(src.file_offset)
                    data = f.read(e.length)
                out.append((e.offset, e.length, src.entry.path, (src.file_offset, data)))
            else:
                assert isinstance(src, Zeros)
                out.append((e.offset, e.length, "zeros", None))
        return out


def test_good_bundle_round_trip(
    tmp_path: Path, station_a: Path, station_b: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """A signed bundle imported on a second station: the same manifest bytes (so the same
    version id), the same files, the same sparse holes, and the same imaging plan for the
    same random draws, on FAT32 and exFAT."""
    result = import_bundle(station_b, bundle, policy=trusting(curator))
    assert result.signature.key == pub_text(curator) and result.signature.trusted
    with open_profile(station_a, "films") as a, open_profile(station_b, "films") as b:
        assert a.manifest_sha256 == b.manifest_sha256 == result.manifest.manifest_sha256
        assert (a.root / "manifest.json").read_bytes() == (b.root / "manifest.json").read_bytes()
        for f in a.manifest.files:
            assert (b.files_root / f.path).read_bytes() == (a.files_root / f.path).read_bytes()
        assert sorted(p.name for p in b.files_root.rglob("*") if p.is_dir()) == sorted(
            p.name for p in a.files_root.rglob("*") if p.is_dir()
        )
        assert (b.files_root / "courses/sparse.img").stat().st_blocks * 512 <= 1 << 20
        sig = json.loads((b.root / SIGNATURE_FILE).read_bytes())
        assert sig["key"] == pub_text(curator) and sig["manifest_sha256"] == b.manifest_sha256
    for fs, usable in (("fat32", 64 << 20), ("exfat", 96 << 20)):
        assert _plan_view(station_a, usable, fs) == _plan_view(station_b, usable, fs)
    assert verify_profile(station_b, "films", trust=trusting(curator).trust).ok


def test_bundle_layout_and_determinism(
    tmp_path: Path, station_a: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """manifest.json first, then signature.json, then every file in manifest order; members
    owned by nobody, dated 0; the same key and version give the same bytes."""
    again = export_bundle(station_a, "films", tmp_path / "again.fdffd", key=curator)
    assert again.path.read_bytes() == bundle.read_bytes()
    names = [n for n, _ in members(bundle)]
    with open_profile(station_a, "films") as p:
        assert names == ["manifest.json", "signature.json"] + [
            f"files/{f.path}" for f in p.manifest.files
        ]
    import tarfile

    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            assert (m.uid, m.gid, m.uname, m.gname, m.mtime, m.mode) == (0, 0, "", "", 0, 0o644)
            assert m.isreg()
    assert not list(tmp_path.glob(".*.partial"))


def test_reimport_is_unchanged_and_adds_a_signature(
    tmp_path: Path, station_a: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """Importing the same bundle twice makes no second version; a signed bundle of a version
    the station already holds unsigned adds the signature to it."""
    unsigned = export_bundle(station_a, "films", tmp_path / "u.fdffd")
    assert not unsigned.signature.signed
    store = tmp_path / "c" / "payloads"
    first = import_bundle(store, unsigned.path)
    assert not first.signature.signed
    vdir = store / "films" / "versions" / first.manifest.manifest_sha256
    assert not (vdir / SIGNATURE_FILE).exists()
    with pytest.raises(PayloadError, match="is not signed"), open_profile(store, "films") as p:
        check_before_job(p, settings(curator))
    second = import_bundle(store, bundle, policy=trusting(curator))
    assert second.manifest.manifest_sha256 == first.manifest.manifest_sha256
    assert (vdir / SIGNATURE_FILE).exists()
    assert len(list((store / "films" / "versions").iterdir())) == 1
    with open_profile(store, "films") as p:
        check_before_job(p, settings(curator))


# --- tampered bundles -------------------------------------------------------------------


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _edit_manifest(data: bytes) -> bytes:
    m = json.loads(data)
    m["created_at"] = "2026-03-01T12:00:01Z"
    text = json.dumps(m, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode()


def _edit_signature(data: bytes) -> bytes:
    s = json.loads(data)
    raw = bytearray(base64.b64decode(s["signature"]))
    raw[10] ^= 0x40
    s["signature"] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(s).encode()


def _other_manifest_hash(data: bytes) -> bytes:
    s = json.loads(data)
    s["manifest_sha256"] = "0" * 64
    return json.dumps(s).encode()


TAMPERING = {
    "file bytes changed": (
        lambda n, d: _flip_last(d) if n == "files/README.txt" else d,
        "files/README.txt: its content differs from the manifest",
    ),
    "file grown": (
        lambda n, d: d + b"!" if n == "files/책/红楼梦 第一回.txt" else d,
        "the manifest says 750: the bundle was changed after it was signed",
    ),
    "manifest changed": (
        lambda n, d: _edit_manifest(d) if n == "manifest.json" else d,
        "this manifest is",
    ),
    "manifest changed and the signature's hash with it": (
        lambda n, d: d,  # both members: below
        "does not verify: the manifest or the signature was changed after signing",
    ),
    "signature changed": (
        lambda n, d: _edit_signature(d) if n == "signature.json" else d,
        "does not verify: the manifest or the signature was changed after signing",
    ),
    "signature of another manifest": (
        lambda n, d: _other_manifest_hash(d) if n == "signature.json" else d,
        "the signature is for manifest 000000000000",
    ),
    "file left out": (
        lambda n, d: None if n == "files/README.txt" else d,
        "where files/README.txt should be",
    ),
    "file added": (
        lambda n, d: d,
        "holds files/zz-extra.txt after the manifest's last file",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
@pytest.mark.parametrize("required", [True, False], ids=["require_signed", "signing-optional"])
def test_tampered_bundle_is_refused(
    tmp_path: Path,
    station_b: Path,
    bundle: Path,
    curator: Ed25519PrivateKey,
    case: str,
    required: bool,
) -> None:
    """Every change to a signed bundle is refused with what changed, whether or not the
    station requires signatures, and nothing is imported (the station's other profile and
    its store stay byte for byte the same)."""
    edit, expected = TAMPERING[case]
    bad = rewrite_bundle(bundle, tmp_path / "bad.fdffd", edit)
    if case == "file added":
        write_bundle(bad, [*members(bundle), ("files/zz-extra.txt", b"smuggled")])
    if case.startswith("manifest changed and"):
        items = dict(members(bundle))
        new = _edit_manifest(items["manifest.json"])
        sig = json.loads(items["signature.json"])
        sig["manifest_sha256"] = hashlib.sha256(new).hexdigest()
        items.update({"manifest.json": new, "signature.json": json.dumps(sig).encode()})
        write_bundle(bad, list(items.items()))
    msg = refused(station_b, bad, trusting(curator, required=required))
    assert expected in msg
    assert str(bad) in msg  # the message names the bundle


def test_member_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, station_b: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """A symbolic link (or anything but a regular member) where a file should be."""
    import tarfile

    bad = tmp_path / "link.fdffd"
    with tarfile.open(bundle) as src, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as out:
        for m in src.getmembers():
            if m.name == "files/README.txt":
                link = tarfile.TarInfo(m.name)
                link.type = tarfile.SYMTYPE
                link.linkname = "/etc/shadow"
                out.addfile(link)
            else:
                out.addfile(m, src.extractfile(m))
    assert "files/README.txt is not a regular file" in refused(station_b, bad, trusting(curator))


def test_path_outside_the_bundle_is_refused(
    tmp_path: Path, station_b: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """A member named to climb out of the staging directory is not the file expected."""
    items = [
        ("files/../../../../tmp/evil.txt" if n == "files/README.txt" else n, d)
        for n, d in members(bundle)
    ]
    bad = write_bundle(tmp_path / "climb.fdffd", items)
    msg = refused(station_b, bad, trusting(curator))
    assert "holds files/../../../../tmp/evil.txt where files/README.txt should be" in msg
    assert not Path("/tmp/evil.txt").exists()


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_bundle_is_refused(
    tmp_path: Path, station_b: Path, bundle: Path, curator: Ed25519PrivateKey, cut: float
) -> None:
    data = bundle.read_bytes()
    bad = tmp_path / "cut.fdffd"
    bad.write_bytes(data[: int(len(data) * cut)])
    msg = refused(station_b, bad, trusting(curator))
    assert "truncated" in msg or "damaged" in msg or "ends before" in msg


def test_not_a_bundle_is_refused(tmp_path: Path, station_b: Path) -> None:
    junk = tmp_path / "junk.fdffd"
    junk.write_bytes(os.urandom(10_000))
    # random bytes may even parse as a tar header: refused either way, saying it is no bundle
    assert "not a bundle" in refused(station_b, junk, ImportPolicy())
    other = write_bundle(tmp_path / "other.tar", [("notes.txt", b"hello")])
    assert "starts with notes.txt, not manifest.json" in refused(station_b, other, ImportPolicy())


# --- unsigned, untrusted ----------------------------------------------------------------


def test_unsigned_bundle_with_require_signed_is_refused(
    tmp_path: Path, station_a: Path, station_b: Path, curator: Ed25519PrivateKey
) -> None:
    out = export_bundle(station_a, "films", tmp_path / "unsigned.fdffd")
    msg = refused(station_b, out.path, trusting(curator))
    assert "is not signed, and this station takes only signed content" in msg
    result = import_bundle(station_b, out.path, policy=trusting(curator, required=False))
    assert not result.signature.signed


def test_bundle_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, station_a: Path, station_b: Path, curator: Ed25519PrivateKey
) -> None:
    stranger = Ed25519PrivateKey.generate()
    out = export_bundle(station_a, "films", tmp_path / "stranger.fdffd", key=stranger)
    msg = refused(station_b, out.path, trusting(curator))
    assert f"signed by key {pub_text(stranger)}, which is not in payload.trusted_keys" in msg
    result = import_bundle(station_b, out.path, policy=trusting(curator, required=False))
    assert result.signature.signed and not result.signature.trusted


def test_directory_import_refused_when_signatures_required(
    tmp_path: Path, station_b: Path, curator: Ed25519PrivateKey
) -> None:
    src = make_tree(tmp_path / "s", {"a.txt": b"a"})
    before = snapshot(station_b)
    with pytest.raises(PayloadError, match="a directory is not signed"):
        add_profile(station_b, "films", src, policy=trusting(curator))
    assert snapshot(station_b) == before


# --- the same rules as a directory ------------------------------------------------------


def _unsigned_bundle(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    manifest = Manifest(
        profile="crafted",
        created_at="2026-03-01T12:00:00Z",
        directories=dirs,
        files=tuple(
            FileRecord(path=p, size=len(d), sha256=hashlib.sha256(d).hexdigest())
            for p, d in sorted(files.items())
        ),
    )
    items = [("manifest.json", manifest.canonical_bytes())]
    items += [(f"files/{p}", d) for p, d in sorted(files.items())]
    return write_bundle(path, items)


def test_bundle_names_pass_the_directory_rules(tmp_path: Path, station_b: Path) -> None:
    """A bundle is checked as a directory is: a junk file in it is refused by name."""
    bad = _unsigned_bundle(tmp_path / "junk.fdffd", {"Thumbs.db": b"x", "a.txt": b"a"})
    msg = refused(station_b, bad, ImportPolicy())
    assert "Thumbs.db" in msg and "thumbnail cache" in msg
    big = _unsigned_bundle(tmp_path / "ok.fdffd", {"a.txt": b"a"})
    assert import_bundle(station_b, big).manifest.profile == "crafted"


# --- before a job, and at daemon start --------------------------------------------------


def test_check_before_job_applies_the_signature_rule(
    tmp_path: Path, station_a: Path, station_b: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """With require_signed, a job refuses an unsigned profile, one whose key is no longer
    trusted, and one whose stored signature was changed or removed, naming the file."""
    with open_profile(station_a, "films") as p:
        check_before_job(p)  # without settings: today's checks only
        check_before_job(p, settings(curator, required=False))
        with pytest.raises(PayloadError) as info:
            check_before_job(p, settings(curator))
        assert f"manifest {p.root / 'manifest.json'} is not signed" in str(info.value)
    import_bundle(station_b, bundle, policy=trusting(curator))
    with open_profile(station_b, "films") as p:
        check_before_job(p, settings(curator))
        with pytest.raises(PayloadError, match=r"not in payload\.trusted_keys"):
            check_before_job(p, settings(Ed25519PrivateKey.generate()))
        sig = p.root / SIGNATURE_FILE
        good = sig.read_bytes()
        sig.write_bytes(_edit_signature(good))
        with pytest.raises(PayloadError, match="does not verify"):
            check_before_job(p, settings(curator))
        assert not verify_profile(station_b, "films", trust=trusting(curator).trust).ok
        sig.unlink()
        with pytest.raises(PayloadError, match="is not signed"):
            check_before_job(p, settings(curator))


def _check_config(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fdffd.cli.daemon", "--check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_daemon_start_refuses_an_unsigned_profile(
    tmp_path: Path, station_a: Path, bundle: Path, curator: Ed25519PrivateKey
) -> None:
    """``fdffd --check-config`` (and so the daemon's start) refuses a job profile that is
    not signed by a trusted key, naming the file; once a signed bundle is imported, ok."""
    pub = tmp_path / "curator.pub"
    pub.write_bytes(
        curator.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cfg = write_config(
        tmp_path,
        station={"payload_dir": str(station_a)},
        job={"profile": "films"},
        payload={"require_signed": True, "trusted_keys": [str(pub)]},
    )
    run = _check_config(cfg)
    assert run.returncode == 2, run.stderr
    assert "manifest.json is not signed" in run.stderr and str(station_a) in run.stderr
    import_bundle(station_a, bundle, policy=trusting(curator))
    run = _check_config(cfg)
    assert run.returncode == 0 and "config ok" in run.stdout, run.stderr
    pub.write_text("not a key\n")
    run = _check_config(cfg)
    assert run.returncode == 2 and f"payload.trusted_keys: {pub}: not an Ed25519" in run.stderr


# --- curators' keys and the CLI ---------------------------------------------------------


def test_cli_keygen_export_import(tmp_path: Path, station_a: Path) -> None:
    """A curator makes a key, signs an export; a station trusting the printed key imports
    it; a station trusting another key refuses it (exit 2, nothing imported)."""
    key = tmp_path / "curator.key"
    run = fdffctl("payload", "keygen", str(key))
    assert run.code == 0, run.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600
    printed = run.stdout.split('trusted_keys = ["')[1].split('"')[0]
    assert printed == pub_text(load_private_key(key))
    assert fdffctl("payload", "keygen", str(key)).code == 2  # never overwritten

    for d in "abc":
        (tmp_path / d).mkdir(exist_ok=True)
    a_cfg = write_config(tmp_path / "a", station={"payload_dir": str(station_a)})
    out = tmp_path / "films.fdffd"
    export = ("payload", "export", "films", str(out), "--sign", str(key), "--config", str(a_cfg))
    run = fdffctl(*export)
    assert run.code == 0, run.stderr
    assert f"signed by key {printed}" in run.stdout

    b_cfg = write_config(
        tmp_path / "b", payload={"require_signed": True, "trusted_keys": [printed]}
    )
    run = fdffctl("payload", "import", str(out), "--config", str(b_cfg), "--json")
    assert run.code == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["signed_by"] == printed and summary["trusted"] is True
    assert summary["profile"] == "films"

    c_cfg = write_config(
        tmp_path / "c",
        payload={"require_signed": True, "trusted_keys": [pub_text(Ed25519PrivateKey.generate())]},
    )
    run = fdffctl("payload", "import", str(out), "--config", str(c_cfg))
    assert run.code == 2 and "not in payload.trusted_keys" in run.stderr
    assert not (tmp_path / "c" / "payloads").exists()

    key.chmod(0o644)
    run = fdffctl(*export)
    assert run.code == 2 and "can be read by others" in run.stderr


def test_openssl_keys_work(tmp_path: Path, station_a: Path, station_b: Path) -> None:
    """A key from ``openssl genpkey -algorithm ed25519`` signs; its ``openssl pkey -pubout``
    public key is a trusted_keys entry."""
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    key.chmod(0o600)
    out = export_bundle(station_a, "films", tmp_path / "o.fdffd", key=load_private_key(key))
    policy = ImportPolicy.from_settings(
        PayloadSection(trusted_keys=[str(pub)], require_signed=True)
    )
    assert import_bundle(station_b, out.path, policy=policy).signature.trusted


def test_payload_config_section() -> None:
    """Bad [payload] settings fail at load, naming the key."""
    good = config_from_dict({"payload": {"trusted_keys": ["/etc/fdffd/k.pub", "A" * 43 + "="]}})
    assert good.payload.metadata == "refuse" and not good.payload.require_signed
    for bad, words in (
        ({"trusted_keys": ["relative.pub"]}, "payload.trusted_keys: 'relative.pub' is neither"),
        ({"trusted_keys": ["QUJD"]}, "neither an absolute path"),
        ({"require_signed": True}, "needs at least one curator key"),
        ({"metadata": "strip"}, "payload.metadata"),
        ({"require_signed": "yes"}, "payload.require_signed"),
    ):
        with pytest.raises(ConfigError, match=words):
            config_from_dict({"payload": bad})
    with pytest.raises(UsageError, match="cannot read"):
        Trust.from_settings(PayloadSection(trusted_keys=["/nonexistent/k.pub"]))


def test_export_refuses_a_changed_profile(tmp_path: Path, station_a: Path) -> None:
    """A stored file changed (same size) since import: export stops, names it, writes
    nothing."""
    with open_profile(station_a, "films") as p:
        victim = p.files_root / "README.txt"
        victim.chmod(0o644)
        victim.write_bytes(b"READ ME FIRST")
    out = tmp_path / "x.fdffd"
    with pytest.raises(PayloadError, match=r"README\.txt' of the stored version differs"):
        export_bundle(station_a, "films", out)
    assert not out.exists() and not list(tmp_path.glob(".x.fdffd.*"))
    assert hash_file(victim)[0] == 13


def test_bundle_metadata_is_checked(tmp_path: Path, station_b: Path) -> None:
    """A bundle's files pass the metadata rule of the importing station, as a directory's."""
    from .payload_util import JPEG, exiftool_write, need_exiftool

    need_exiftool()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(JPEG)
    exiftool_write(photo, "-GPSLatitude=39.0392", "-GPSLatitudeRef=N")
    bad = _unsigned_bundle(tmp_path / "gps.fdffd", {"photo.jpg": photo.read_bytes()})
    msg = refused(station_b, bad, ImportPolicy())
    assert "  - photo.jpg: " in msg and "GPS:GPSLatitude = '39.0392' (place)" in msg
    result = import_bundle(station_b, bad, policy=ImportPolicy(metadata="warn"))
    assert {f.tag for f in result.findings} >= {"GPS:GPSLatitude", "GPS:GPSLatitudeRef"}
