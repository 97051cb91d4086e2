"""The station configuration: TOML in, a validated model out.

Bad settings fail at load, naming the key and the reason (STYLE.md, 8).  Every key
and its default is documented in docs/configuration.md.
"""

from __future__ import annotations

import re
import tomllib
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
from .sizes import parse_size

DEFAULT_CONFIG_PATH = Path("/etc/fdffd/fdffd.toml")
#: a payload profile's name (the same rule as ``fdffd.payload.manifest``); "" = no payload
PROFILE_PATTERN = r"^(|[A-Za-z0-9_-][A-Za-z0-9._-]{0,63})$"
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
    min_size: Size = 64 << 20
    max_size: Size = 8 << 40

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
    chunk: Size = Field(default=4 << 20, ge=64 << 10, le=256 << 20, multiple_of=4096)
    #: how much data the probe writes to push its blocks out of an on-drive write cache
    probe_cache_flush: Size = 32 << 20
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
        from .imaging import exfat, fat32  # pure modules, loaded only for this check

        fs = info.data.get("filesystem", "auto")
        for module in {"fat32": [fat32], "exfat": [exfat]}.get(fs, [fat32, exfat]):
            try:
                module.check_label(label)
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


class Config(_Section):
    station: StationSection = StationSection()
    drives: DrivesSection = DrivesSection()
    job: JobSection = JobSection()

    @property
    def audit_log(self) -> Path:
        return self.station.state_dir / "audit.jsonl"


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
    return config_from_dict(data, p)
