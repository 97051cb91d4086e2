"""Helpers for the payload tests: trees, store snapshots, real media files, bundle surgery.

The media files are real: a baseline JPEG, a PDF, an MP4 (ftyp + moov) and a DOCX are built
byte by byte, then ExifTool itself writes the metadata into them, as a camera, a phone or an
office program would have.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest


def make_tree(root: Path, files: dict[str, bytes], dirs: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for d in dirs or []:
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` and, for files, their bytes (nothing when it does not exist)."""
    if not root.exists():
        return {}
    out: dict[str, bytes | None] = {".": None}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def need_exiftool() -> None:
    if shutil.which("exiftool") is None:
        pytest.skip("needs exiftool (libimage-exiftool-perl, installed by scripts/bootstrap)")


def exiftool_write(path: Path, *assignments: str) -> None:
    """Let ExifTool write tags into ``path`` (``-Tag=value`` arguments), in place."""
    subprocess.run(
        ["exiftool", "-q", "-q", "-overwrite_original", *assignments, str(path)],
        check=True,
        capture_output=True,
    )


# --- files built byte by byte -----------------------------------------------------------

#: a 1x1 grey baseline JPEG: SOI, JFIF, DQT, SOF0, DHT (DC and AC), SOS, one MCU, EOI
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000"
    "ffdb004300" + "01" * 64 + "ffc0000b080001000101011100"
    "ffc4001f0000010501010101010100000000000000000102030405060708090a0b"
    "ffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114"
    "328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a4344"
    "45464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293"
    "9495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7"
    "d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
    "ffda0008010100003f00d2cf20ffd9"
)


def pdf_bytes(info: str = "") -> bytes:
    """A one-page PDF; ``info`` is the body of an Info dictionary (``/Author (Kim)``)."""
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] >>",
    ]
    if info:
        objs.append(b"<< " + info.encode() + b" >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, o)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offsets:
        out += b"%010d 00000 n \n" % o
    trailer = b"/Size %d /Root 1 0 R" % (len(objs) + 1)
    if info:
        trailer += b" /Info %d 0 R" % len(objs)
    out += b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref)
    return bytes(out)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def mp4_bytes(created: int = 0) -> bytes:
    """An MP4 (ftyp, moov with a movie header); ``created`` is mvhd's creation time, in
    seconds since 1904 (0 = none, as ``ffmpeg -fflags +bitexact`` writes)."""
    mvhd = _box(
        b"mvhd",
        struct.pack(">B3xIIII", 0, created, created, 1000, 0)
        + struct.pack(">IH10x", 0x10000, 0x100)
        + struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
        + bytes(24)
        + struct.pack(">I", 2),
    )
    return _box(b"ftyp", b"isom\0\0\2\0isomiso2mp41") + _box(b"moov", mvhd)


def docx_bytes(creator: str | None) -> bytes:
    """A Word document's package with its core properties (``dc:creator``)."""
    who = f"<dc:creator>{creator}</dc:creator>" if creator else ""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        # fixed member times: a zip's own dates are metadata too (1980-01-01 is no date)
        def add(name: str, text: str) -> None:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), text)

        add(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://'
            'schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" '
            'ContentType="application/xml"/><Override PartName="/docProps/core.xml" '
            'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/></Types>',
        )
        add(
            "docProps/core.xml",
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><cp:coreProperties '
            'xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/">' + who + "</cp:coreProperties>",
        )
    return buf.getvalue()


# --- bundles ----------------------------------------------------------------------------

Edit = Callable[[str, bytes], "bytes | None"]


def members(bundle: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(bundle) as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            out.append((m.name, f.read() if f else b""))
        return out


def write_bundle(path: Path, items: list[tuple[str, bytes]]) -> Path:
    """A tar with these members, in this order, as ``payload export`` writes them."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def rewrite_bundle(src: Path, dst: Path, edit: Edit) -> Path:
    """``src`` with each member's bytes passed through ``edit`` (None drops the member)."""
    items = []
    for name, data in members(src):
        new = edit(name, data)
        if new is not None:
            items.append((name, new))
    return write_bundle(dst, items)
