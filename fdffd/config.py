"""The station configuration: TOML in, a validated model out.

Bad settings fail at load, naming the key and the reason (STYLE.md, 8).  Every key
and its default is documented in docs/configuration.md.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .sizes import parse_size

DEFAULT_CONFIG_PATH = Path("/etc/fdffd/fdffd.toml")

Size = Annotated[int, BeforeValidator(parse_size)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationSection(_Section):
    id: str = Field(default="station-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    state_dir: Path = Path("/var/lib/fdffd")
    payload_dir: Path = Path("/var/lib/fdffd/payloads")
    control_socket: Path = Path("/run/fdffd/control.sock")


class DrivesSection(_Section):
    buses: list[str] = ["usb"]
    ports: list[str] = []
    allow_loop: bool = False
    min_size: Size = 64 << 20
    max_size: Size = 8 << 40

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
    #: I/O size of the wipe and verify passes
    chunk: Size = 4 << 20
    #: how much data the probe writes to push its blocks out of an on-drive write cache
    probe_cache_flush: Size = 32 << 20
    #: a drive slower than this many bytes per second over ``slow_window`` is failed as too
    #: slow (0 = never)
    min_speed: Size = 500_000
    slow_window: float = Field(default=120.0, gt=0)
    #: power a finished drive off (USB) so the volunteer knows it is safe to pull
    power_off: bool = False


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
    return config_from_dict(data, p)
