"""The station configuration: TOML in, a validated model out.

Bad settings fail at load, naming the key and the reason (docs/design.md).  Every key
and its default is documented in docs/configuration.md.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError, UsageError
from .names import LABEL_RULES, PROFILE_NAME
from .sizes import KiB, MiB, TiB, parse_size
from .statedir import StateDir

DEFAULT_CONFIG_PATH = Path("/etc/fdffd/fdffd.toml")
#: ``job.profile``: a payload profile's name (``fdffd.names``), or "" for no payload
PROFILE_PATTERN = rf"^(|{PROFILE_NAME})$"
_BUS = re.compile(r"[a-z0-9_-]{1,32}")


def _size(value: object) -> int:
    """A size from TOML: an integer of bytes or a string such as "64MiB"."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        kind = {bool: "a boolean", float: "a decimal number", list: "a list", dict: "a table"}
        got = kind.get(type(value), type(value).__name__)
        raise ValueError(f'expected a size such as "64MiB" or a whole number of bytes, got {got}')
    return parse_size(value)


def _path(value: object) -> object:
    """Paths in the config are absolute: a relative one would depend on the working directory."""
    if isinstance(value, str | Path):
        text = str(value)
        if "\x00" in text:
            raise ValueError("a path cannot hold a NUL character")
        if not text.startswith("/"):
            raise ValueError(f"{text!r} is not an absolute path; write it from '/'")
    return value


Size = Annotated[int, BeforeValidator(_size)]
AbsPath = Annotated[Path, BeforeValidator(_path), Field(strict=False)]


class _Section(BaseModel):
    # strict: TOML has real booleans and numbers, so "yes" is not a boolean and true is
    # not a number of passes
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StationSection(_Section):
    id: str = Field(default="station-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    state_dir: AbsPath = Path("/var/lib/fdffd")
    payload_dir: AbsPath = Path("/var/lib/fdffd/payloads")
    control_socket: AbsPath = Path("/run/fdffd/control.sock")
    #: the volunteers' language (``en``, ``ko``); ``LANGUAGE`` wins over it, it wins over
    #: ``LC_ALL``/``LC_MESSAGES``/``LANG`` (see fdffd.i18n)
    language: Literal["en", "ko"] | None = None
    #: a TOML file of ``[[ports]]`` entries read with this config (what ``fdffctl ports
    #: learn`` writes, so the main config is never rewritten); a missing file = no map
    ports_file: AbsPath | None = None


def _check_glob(glob: str) -> str:
    """An ``fnmatch`` glob for ``drives.ports``: not empty, every '[' closed."""
    if not glob:
        raise ValueError("an empty glob matches no port; remove it (an empty list = any port)")
    i = 0
    while i < len(glob):
        if glob[i] == "[":
            j = i + 1
            if glob[j : j + 1] == "!":
                j += 1
            if glob[j : j + 1] == "]":
                j += 1
            close = glob.find("]", j)
            if close < 0:
                raise ValueError(
                    f"{glob!r}: the '[' at position {i} is never closed by ']' "
                    "(write [[] for a literal '[')"
                )
            i = close
        i += 1
    return glob


class DrivesSection(_Section):
    buses: list[str] = ["usb"]
    ports: list[str] = []
    allow_loop: bool = False
    min_size: Size = 64 * MiB
    max_size: Size = 8 * TiB

    @field_validator("buses")
    @classmethod
    def _buses(cls, buses: list[str]) -> list[str]:
        for bus in buses:
            if bus == "loop":
                raise ValueError(
                    "'loop' is not a bus fdffd matches; set drives.allow_loop = true instead"
                )
            if not _BUS.fullmatch(bus):
                raise ValueError(
                    f"{bus!r} is not a bus name; use udev ID_BUS names such as "
                    '"usb", "ata", "scsi", "mmc" (lower case)'
                )
        return buses

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[str]) -> list[str]:
        return [_check_glob(g) for g in ports]

    @model_validator(mode="after")
    def _bounds(self) -> DrivesSection:
        if self.min_size > self.max_size:
            raise ValueError(
                f"min_size ({self.min_size}) is larger than max_size ({self.max_size})"
            )
        return self


class JobSection(_Section):
    passes: int = Field(default=1, ge=1, le=8)
    verify: Literal["full", "off"] = "full"
    filesystem: Literal["auto", "fat32", "exfat"] = "auto"
    label: str = Field(default="", max_length=11)
    counterfeit: Literal["reject", "rescue"] = "reject"
    profile: str = "default"
    workers: int = Field(default=8, ge=1, le=64)
    #: I/O size of the wipe and verify passes (64 KiB to 256 MiB, a multiple of 4 KiB)
    chunk: Size = Field(default=4 * MiB, ge=64 * KiB, le=256 * MiB, multiple_of=4 * KiB)
    #: how much data the probe writes to push its blocks out of an on-drive write cache
    probe_cache_flush: Size = 32 * MiB
    #: a drive slower than this many bytes per second over ``slow_window`` is failed as too
    #: slow (0 = never)
    min_speed: Size = 500_000
    slow_window: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    #: power a finished drive off (USB) so the volunteer knows it is safe to pull
    power_off: bool = False
    #: what a finished drive's free space and file slack hold: ``zeros``, as on a drive an
    #: ordinary system formatted and filled (a keyed pass proves the capacity first), or
    #: ``keyed`` fill (faster; uniform noise an examiner sees at once)
    free_space: Literal["zeros", "keyed"] = "zeros"
    #: days the random base date of a drive's timestamps is drawn from ...
    date_window: int = Field(default=365, ge=1, le=3650)
    #: ... ending this many days before the station's date (at least 30)
    date_min_age: int = Field(default=30, ge=30, le=3650)

    @field_validator("label")
    @classmethod
    def _label(cls, label: str, info: ValidationInfo) -> str:
        # checked at load, not when the first drive is imaged (after its probe)
        fs = info.data.get("filesystem", "auto")
        rules = [LABEL_RULES[fs]] if fs in LABEL_RULES else list(LABEL_RULES.values())
        for check in rules:
            try:
                check(label)
            except UsageError as err:
                raise ValueError(err.message) from None
        return label

    @field_validator("profile")
    @classmethod
    def _profile(cls, profile: str) -> str:
        if not re.fullmatch(PROFILE_PATTERN, profile):
            raise ValueError(
                f"{profile!r} is not a profile name: use 1 to 64 of A-Z a-z 0-9 . _ - "
                'not starting with "." (or "" for no payload)'
            )
        return profile


def _trusted_key(entry: str) -> str:
    """An absolute path to a public key file, or the base64 of a raw Ed25519 public key."""
    if entry.startswith("/"):
        _path(entry)
        return entry
    try:
        raw = base64.b64decode(entry, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            f"{entry[:60]!r} is neither an absolute path to a public key file nor the base64 "
            "of a 32-byte Ed25519 public key (what `fdffctl payload keygen` prints)"
        )
    return entry


class PayloadSection(_Section):
    """Signed content and import hygiene (docs/payload.md)."""

    #: curators' Ed25519 public keys: paths to key files, or base64 of the raw 32 bytes
    trusted_keys: list[str] = []
    #: refuse to import or use a profile not signed by one of ``trusted_keys``
    require_signed: bool = False
    #: what an import does with files whose metadata names people, places, devices or dates
    metadata: Literal["refuse", "warn"] = "refuse"
    #: tags accepted anyway (``Tag`` or ``Group:Tag`` as ExifTool names them)
    metadata_allow: list[str] = []

    @field_validator("trusted_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        return [_trusted_key(k) for k in keys]

    @model_validator(mode="after")
    def _signed_needs_keys(self) -> PayloadSection:
        if self.require_signed and not self.trusted_keys:
            raise ValueError(
                "require_signed = true needs at least one curator key in trusted_keys "
                "(otherwise no profile could ever be imported or used)"
            )
        return self


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,15}")


class PortEntry(_Section):
    """One physical port of the hub: the label printed next to it and its ``ID_PATH`` glob."""

    label: str
    path: str
    audience: str = ""
    media: Literal["sd", "usb"] | None = None

    @field_validator("label")
    @classmethod
    def _label(cls, label: str) -> str:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"{label[:40]!r} is not a port label: 1 to 16 of A-Z a-z 0-9 space . _ - "
                "starting with a letter or digit (what is printed next to the port)"
            )
        return label

    @field_validator("path")
    @classmethod
    def _path_glob(cls, path: str) -> str:
        return _check_glob(path)

    def matches(self, port: str) -> bool:
        return bool(port) and fnmatchcase(port, self.path)


class AudienceSection(_Section):
    """An audience's payload profiles, largest first: a job takes the first that fits."""

    profiles: list[str] = Field(min_length=1)

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, profiles: list[str]) -> list[str]:
        for name in profiles:
            if not name or not re.fullmatch(PROFILE_PATTERN, name):
                raise ValueError(
                    f"{name!r} is not a profile name: use 1 to 64 of A-Z a-z 0-9 . _ -"
                )
        if len(set(profiles)) != len(profiles):
            raise ValueError("a profile is listed twice")
        return profiles


class Config(_Section):
    station: StationSection = StationSection()
    drives: DrivesSection = DrivesSection()
    job: JobSection = JobSection()
    payload: PayloadSection = PayloadSection()
    #: the hub's ports in physical order (empty: no map, any port the drives policy admits)
    ports: list[PortEntry] = []
    audiences: dict[str, AudienceSection] = {}

    @field_validator("audiences")
    @classmethod
    def _audience_names(cls, audiences: dict[str, AudienceSection]) -> dict[str, AudienceSection]:
        for name in audiences:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
                raise ValueError(f"{name[:40]!r} is not an audience name: 1 to 32 of a-z 0-9 _ -")
        return audiences

    @model_validator(mode="after")
    def _port_map(self) -> Config:
        labels = [p.label for p in self.ports]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"ports: the label {label!r} is used by two ports")
        for p in self.ports:
            if p.audience and p.audience not in self.audiences:
                known = ", ".join(sorted(self.audiences)) or "none defined"
                raise ValueError(
                    f"ports: port {p.label!r} serves audience {p.audience!r}, which has no "
                    f"[audiences.{p.audience}] table (audiences: {known})"
                )
        return self

    def port_entry(self, port: str) -> PortEntry | None:
        """The first mapped port whose glob matches the udev ``ID_PATH`` ``port``."""
        return next((p for p in self.ports if p.matches(port)), None)

    def profiles_for(self, audience: str) -> list[str]:
        """The profiles a job may choose from, largest first: the audience's, or
        ``job.profile`` alone (none when it is "")."""
        if audience and audience in self.audiences:
            return list(self.audiences[audience].profiles)
        return [self.job.profile] if self.job.profile else []

    @property
    def state(self) -> StateDir:
        """The files under ``station.state_dir``."""
        return StateDir(self.station.state_dir)

    @property
    def audit_log(self) -> Path:
        return self.state.audit_log


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; docs/configuration.md lists every key)"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{key}: {msg}" if key else msg)
    return "; ".join(lines)


def config_from_dict(data: dict[str, Any], path: Path | str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err), path=str(path)) from None


def load_config(path: Path | str | None) -> Config:
    """Load and validate the TOML config at ``path`` (defaults only when ``path`` is None)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", path=str(p)) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", path=str(p)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=str(p)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", path=str(p)) from None
    except RecursionError:
        raise ConfigError(
            "not a usable config: arrays or tables nested too deeply", path=str(p)
        ) from None
    return config_from_dict(_with_ports_file(data, p), p)


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", path=str(p)) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"not valid UTF-8 TOML: {err}", path=str(p)) from None


def _with_ports_file(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``data`` with the ``[[ports]]`` of ``station.ports_file`` (a missing file = no map)."""
    station = data.get("station")
    ports_file = station.get("ports_file") if isinstance(station, dict) else None
    if not isinstance(ports_file, str) or not ports_file.startswith("/"):
        return data  # absent, or wrong: the model names the key
    pf = Path(ports_file)
    if not pf.exists():
        return data
    if data.get("ports"):
        raise ConfigError(
            f"[[ports]] is set both here and in station.ports_file ({pf}); keep one", path=str(path)
        )
    extra = _read_toml(pf)
    unknown = sorted(set(extra) - {"ports"})
    if unknown:
        raise ConfigError(f"only [[ports]] belongs here, not {unknown}", path=str(pf))
    return {**data, "ports": extra.get("ports", [])}
