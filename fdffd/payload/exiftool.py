"""A thin adapter to ExifTool: the metadata of files, as ExifTool reports it.

``exiftool -j -G1 -n -a`` prints, for every file, every tag it finds (``-a``: duplicates too),
named ``Group1:Tag`` (``-G1``: ``GPS:GPSLatitude``, ``PDF:Author``, ``ItemList:Encoder``) with
its raw value (``-n``), as JSON.  Files it cannot parse are reported with an
``ExifTool:Error``; they carry no metadata ExifTool knows of.  When ExifTool warns that a
video's media data may hold more tags (timed GPS tracks of dash and action cameras), the file
is read again with ``-ee`` (which reads the whole file, so only for those).

ExifTool parses untrusted files: when this runs as root it runs ExifTool as ``nobody`` (no
supplementary groups), from the directory holding the files, which it names relatively
(``./path``), so it needs no access to the directories above them.  The classification of
the tags is ``fdffd.payload.metadata``'s (pure).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fdffd.errors import PayloadError

#: files per ExifTool run (keeps the command line and the JSON bounded)
BATCH = 200
_ENV = {"PATH": "/usr/bin:/bin:/usr/local/bin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}
_OPTIONS = ["-config", "", "-j", "-G1", "-n", "-a", "-q", "-api", "LargeFileSupport=1"]
_EMBEDDED_HINT = "ExtractEmbedded"

Tags = dict[str, Any]


class ExifToolMissing(PayloadError):
    """{detail}"""

    code = "exiftool-missing"


def exiftool_path() -> str:
    """The ``exiftool`` program, or ``ExifToolMissing`` saying how to install it."""
    found = shutil.which("exiftool", path=_ENV["PATH"])
    if found is None:
        raise ExifToolMissing(
            "exiftool is not installed, and every import checks each file's metadata with "
            "it: install it (`apt install libimage-exiftool-perl libarchive-zip-perl`, or "
            "run scripts/bootstrap)"
        )
    return found


def _unprivileged() -> dict[str, Any]:
    """subprocess arguments that run the child as ``nobody`` when this process is root."""
    if os.geteuid() != 0:
        return {}
    try:
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
    except KeyError:
        uid = gid = 65534
    return {"user": uid, "group": gid, "extra_groups": []}


def _run(root: Path, paths: Sequence[str], extra: Sequence[str], profile: str) -> list[Tags]:
    args = [exiftool_path(), *_OPTIONS, *extra, "--", *(f"./{p}" for p in paths)]
    try:
        done = subprocess.run(
            args,
            cwd=root,
            env=_ENV,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120 + 2 * len(paths),
            check=False,
            **_unprivileged(),
        )
    except subprocess.TimeoutExpired:
        raise PayloadError(
            f"exiftool did not finish reading the metadata of {len(paths)} files in time",
            profile=profile,
        ) from None
    except OSError as err:
        raise PayloadError(f"cannot run exiftool: {err.strerror}", profile=profile) from None
    try:
        out = json.loads(done.stdout or b"[]")
    except ValueError:
        out = None
    if not isinstance(out, list) or not all(isinstance(t, dict) for t in out):
        why = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise PayloadError(
            f"exiftool (exit {done.returncode}) printed no metadata a station can read: {why}",
            profile=profile,
        )
    return out


def _batches(paths: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(paths), BATCH):
        yield paths[i : i + BATCH]


def read_tags(root: Path, paths: Sequence[str], *, profile: str) -> dict[str, Tags]:
    """``{path: {"Group:Tag": value}}`` for every ``path`` (relative to ``root``), as
    ExifTool reports it.  ``PayloadError`` when ExifTool is missing, fails or leaves a file
    out."""
    found: dict[str, Tags] = {}
    again: list[str] = []
    for batch in _batches(list(paths)):
        for tags in _run(root, batch, [], profile):
            path = str(tags.get("SourceFile", "")).removeprefix("./")
            found[path] = tags
            if _EMBEDDED_HINT in str(tags.get("ExifTool:Warning", "")):
                again.append(path)
    for batch in _batches(again):
        for tags in _run(root, batch, ["-ee"], profile):
            found[str(tags.get("SourceFile", "")).removeprefix("./")] = tags
    missing = [p for p in paths if p not in found]
    if missing:
        raise PayloadError(
            f"exiftool reported nothing on {len(missing)} file(s), e.g. {missing[0]!r}",
            profile=profile,
        )
    return found
