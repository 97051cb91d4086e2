"""File metadata that names people, places, devices or dates: found at import, refused by policy.

A photo's EXIF holds where it was taken (GPS) and the camera's serial number; an Office or
PDF document its author and the company; a video its encoder and when it was recorded.  A
drive carries such a file into a country whose police read it.  The import lists every such
tag of every file, as ExifTool reports it (``fdffd.payload.exiftool``), and with
``payload.metadata = "refuse"`` (the default) refuses the import; with ``"warn"`` it lists
them and imports.  It never strips them: a curator's signature covers the bytes, so the
curator cleans the files (``exiftool -all=``, ``mat2``) and signs what was cleaned.

``classify`` is pure: ExifTool's tags of one file in, the findings out.  The kinds:

- ``place``: any GPS tag; city, country, location names;
- ``person``: authors, creators, owners, last editors, companies, photographers;
- ``device``: camera and phone makes, models, serial numbers, the host computer;
- ``software``: encoders, muxers, producers, creator tools (they date and place a file's
  making: ``Lavf60.3.100``, ``Microsoft Word for Microsoft 365``);
- ``date``: creation, modification, digitisation and metadata times, time zones;
- ``identifier``: document and instance ids that link a file to the one it came from, and
  the original file name.

ExifTool's own groups (``System``: the file system's times and modes, ``File``: the format,
``ExifTool``, ``Composite``: derived from tags already listed) and ICC colour profiles (their
"device" is a colour standard) are not the file's metadata about people.  A date that is all
zeros or an epoch placeholder (1904, 1970 and 1980 January 1st, midnight) is no date.
``payload.metadata_allow`` lists tags (``Tag`` or ``Group:Tag``, any case) a station accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fdffd.errors import PayloadError
from fdffd.log import get_logger
from fdffd.text import clean_untrusted, shown

from . import exiftool

Kind = Literal["place", "person", "device", "software", "date", "identifier"]
MetadataMode = Literal["refuse", "warn"]

_IGNORED_GROUPS = frozenset({"SourceFile", "ExifTool", "System", "File", "Composite"})
_PLACE = frozenset(
    {
        "city", "country", "countryname", "countrycode", "state", "province-state",
        "provincestate", "sub-location", "sublocation", "worldregion", "address",
        "postalcode",
    }
)  # fmt: skip
_PERSON = frozenset(
    {
        "author", "authors", "xpauthor", "by-line", "byline", "owner", "ownername",
        "cameraownername", "lastmodifiedby", "lastsavedby", "company", "manager",
        "captionwriter", "writer-editor", "username", "email", "e-mail", "contact",
        "authorsposition", "imagecreator",
    }
)  # fmt: skip
_ARTIST_GROUPS = frozenset({"ifd0", "ifd1", "exififd", "xmp-tiff"})
_DEVICE = frozenset(
    {
        "make", "model", "lensmake", "lensmodel", "uniquecameramodel",
        "localizedcameramodel", "hostcomputer", "devicemanufacturer", "devicemodel",
        "androidmake", "androidmodel", "cameraid",
    }
)  # fmt: skip
_SOFTWARE = frozenset(
    {
        "software", "encoder", "encodedby", "writingapp", "muxingapp", "creatortool",
        "producer", "application", "historysoftwareagent", "processingsoftware",
        "xmptoolkit",
    }
)  # fmt: skip
_IDENTIFIER = frozenset(
    {
        "documentid", "instanceid", "originaldocumentid", "imageuniqueid",
        "historyinstanceid", "preservedfilename", "rawfilename", "originalfilename",
        "contentidentifier",
    }
)  # fmt: skip
_DATE = frozenset(
    {
        "datetimeoriginal", "datetimedigitized", "datecreated", "datetimecreated",
        "timecreated", "digitalcreationdate", "digitalcreationtime", "dateacquired",
        "datetime", "historywhen", "offsettime",
        "offsettimeoriginal", "offsettimedigitized", "timezone", "timezoneoffset",
    }
)  # fmt: skip
_DATE_RE = re.compile(
    r".*(create|creation|modify|modification|original|digitized|metadata)(date|time)"
)
_PLACEHOLDER_DATES = re.compile(
    r"(0{4}[:-]0{2}[:-]0{2}([ T]0{2}:0{2}:0{2})?"
    r"|(1904|1970|1980)[:-]01[:-]01([ T]00:00:00)?)(z|[+-]00:?00)?"
)
_VALUE_LIMIT = 60


@dataclass(frozen=True)
class Finding:
    """One tag of one file: ``tag`` as ExifTool names it (``GPS:GPSLatitude``), its
    ``kind``, and its value made safe to print (shortened)."""

    path: str
    tag: str
    kind: Kind
    value: str

    def line(self) -> str:
        return f"{self.tag} = {self.value!r} ({self.kind})" if self.value else self.tag


def _kind_of(group: str, name: str) -> Kind | None:
    """The kind of tag ``group:name`` (both folded to lower case), or None."""
    if name.startswith("gps") or group.startswith("gps") or name in _PLACE:
        return "place"
    if name.startswith("location"):
        return "place"
    if name in _PERSON or (name == "artist" and group in _ARTIST_GROUPS):
        return "person"
    if name == "creator" or (name.startswith("creator") and name != "creatortool"):
        return "software" if group == "pdf" else "person"  # a PDF's /Creator is its program
    if "serial" in name or name in _DEVICE:
        return "device"
    if name in _SOFTWARE:
        return "software"
    if name in _IDENTIFIER or name.startswith("derivedfrom"):
        return "identifier"
    if name in _DATE or _DATE_RE.fullmatch(name):
        return "date"
    return None


def _empty(kind: Kind, value: Any) -> bool:
    text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    text = text.strip().casefold()
    if text in ("", "none", "unknown"):
        return True
    return kind == "date" and (text == "0" or bool(_PLACEHOLDER_DATES.fullmatch(text)))


def _allowed(group: str, name: str, allow: frozenset[str]) -> bool:
    return name in allow or f"{group}:{name}" in allow


def classify(path: str, tags: Mapping[str, Any], allow: Iterable[str] = ()) -> list[Finding]:
    """Every tag of one file (ExifTool's ``-G1`` names) that names a person, a place, a
    device, a program, a date or an identifier, in ExifTool's order; ``allow`` lists tags
    (``Tag`` or ``Group:Tag``, any case) not to report."""
    allowed = frozenset(a.casefold() for a in allow)
    out: list[Finding] = []
    for key, value in tags.items():
        group, _, name = key.rpartition(":")
        g, n = group.casefold(), name.casefold()
        if not group or group in _IGNORED_GROUPS or g.startswith("icc"):
            continue
        kind = _kind_of(g, n)
        if kind is None or _empty(kind, value) or _allowed(g, n, allowed):
            continue
        shown_value = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        out.append(Finding(path, key, kind, clean_untrusted(shown_value, _VALUE_LIMIT)))
    return out


# --- the policy at import ---------------------------------------------------------------


def findings_message(findings: Sequence[Finding], *, refused: bool) -> str:
    """The list an operator reads: each file, then its tags."""
    by_path: dict[str, list[Finding]] = {}
    for f in findings:
        by_path.setdefault(f.path, []).append(f)
    lines = [
        f"{len(by_path)} file(s) hold metadata that names people, places, devices, programs "
        "or dates" + (' (payload.metadata = "refuse"); nothing was imported:' if refused else ":")
    ]
    for path, found in sorted(by_path.items()):
        lines.append(f"  - {shown(path)}: " + "; ".join(f.line() for f in found))
    if refused:
        lines.append(
            "remove it from the files (`exiftool -all= FILE`, or mat2; for a video "
            "`ffmpeg -i IN -map_metadata -1 -fflags +bitexact -c copy OUT`) and import "
            'again, or accept it with payload.metadata = "warn" or payload.metadata_allow'
        )
    return "\n".join(lines)


def check_metadata(
    root: Path,
    paths: Sequence[str],
    *,
    profile: str,
    mode: MetadataMode = "refuse",
    allow: Iterable[str] = (),
) -> list[Finding]:
    """Read the metadata of ``paths`` (files under ``root``) and classify it.  With
    ``mode = "refuse"`` any finding raises one ``PayloadError`` listing them all (file and
    tag); with ``"warn"`` the findings are logged (tags, not values) and returned."""
    allow = tuple(allow)
    tags = exiftool.read_tags(root, paths, profile=profile)
    findings = [f for p in paths for f in classify(p, tags[p], allow)]
    if findings and mode == "refuse":
        raise PayloadError(
            findings_message(findings, refused=True),
            profile=profile,
            problems=[f"{f.path}: {f.tag} ({f.kind})" for f in findings],
        )
    if findings:
        get_logger(profile=profile).warning(
            "payload.metadata_found",
            files=len({f.path for f in findings}),
            tags=sorted({f.tag for f in findings}),
        )
    return findings
