"""Loading the station config: defaults, sizes, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fdffd.config import Config, load_config
from fdffd.errors import ConfigError, ExitCode
from fdffd.sizes import parse_size


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fdffd.toml"
    p.write_text(text)
    return p


def test_defaults_match_the_design() -> None:
    """With no file, the defaults are docs/configuration.md's."""
    c = Config()
    assert (
        c.drives.buses == ["usb"] and c.drives.min_size == 64 << 20 and c.drives.max_size == 8 << 40
    )
    assert c.job.passes == 1 and c.job.verify == "full" and c.job.counterfeit == "reject"
    assert c.job.workers == 8 and c.job.filesystem == "auto" and not c.drives.allow_loop


def test_full_example_loads(tmp_path: Path) -> None:
    """The example config of docs/configuration.md loads, sizes parsed."""
    p = _write(
        tmp_path,
        """
[station]
id = "station-1"
state_dir = "/var/lib/fdffd"
payload_dir = "/var/lib/fdffd/payloads"
[drives]
buses = ["usb"]
ports = []
allow_loop = false
min_size = "64MiB"
max_size = "8TiB"
[job]
passes = 1
verify = "full"
filesystem = "auto"
label = ""
counterfeit = "reject"
profile = "default"
workers = 8
""",
    )
    c = load_config(p)
    assert c.drives.max_size == 8 << 40


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[drives]\nmin_sise = "1GiB"\n', "drives.min_sise: unknown key"),
        ('[drives]\nmin_size = "12 parsecs"\n', "drives.min_size: unknown unit"),
        ('[drives]\nmin_size = "lots"\n', "drives.min_size: 'lots' is not a size"),
        ('[job]\npasses = "two"\n', "job.passes:"),
        ('[job]\ncounterfeit = "ignore"\n', "job.counterfeit:"),
        ("[job]\nworkers = 0\n", "job.workers:"),
        ('[drives]\nmin_size = "2TiB"\nmax_size = "1TiB"\n', "min_size"),
        ("[station\nid=1", "not valid TOML"),
        ("[colour]\nx = 1\n", "colour: unknown key"),
    ],
)
def test_bad_settings_fail_at_load_naming_key_and_reason(
    tmp_path: Path, text: str, needle: str
) -> None:
    """Each bad setting fails at load with the file, the key and the reason, exit code 2."""
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert needle in str(info.value)
    assert str(p) in str(info.value)
    assert info.value.exit_code == ExitCode.USAGE


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing config file says so."""
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


@given(
    st.integers(min_value=0, max_value=1 << 50),
    st.sampled_from(["B", "KiB", "MiB", "GiB", "KB", "MB", "GB", ""]),
)
def test_sizes_round_trip(n: int, unit: str) -> None:
    """A whole number with any unit parses to that many units' bytes."""
    factor = {
        "B": 1,
        "": 1,
        "KiB": 1024,
        "MiB": 1 << 20,
        "GiB": 1 << 30,
        "KB": 1000,
        "MB": 10**6,
        "GB": 10**9,
    }[unit]
    assert parse_size(f"{n}{unit}") == n * factor
    assert parse_size(f"{n} {unit}") == n * factor


PORT_MAP = """
[audiences.youth]
profiles = ["youth-32g", "youth-4g"]
[audiences.scholars]
profiles = ["scholars"]
"""


def test_a_port_map_and_audiences_load_in_physical_order(tmp_path: Path) -> None:
    """``[[ports]]`` keep their order; each matches its ``ID_PATH`` glob; audiences list
    their profiles largest first; without an audience ``job.profile`` is the one choice."""
    cfg = tmp_path / "fdffd.toml"
    cfg.write_text(
        PORT_MAP
        + """
[[ports]]
label = "B"
path = "pci-0000:00:14.0-usb-0:1.2:*"
audience = "youth"
[[ports]]
label = "A"
path = "pci-0000:00:14.0-usb-0:1.1:*"
audience = "scholars"
media = "sd"
"""
    )
    c = load_config(cfg)
    assert [p.label for p in c.ports] == ["B", "A"]
    entry = c.port_entry("pci-0000:00:14.0-usb-0:1.1:1.0-scsi-0:0:0:0")
    assert entry is not None and entry.label == "A" and entry.media == "sd"
    assert c.port_entry("pci-0000:00:14.0-usb-0:2:1.0") is None
    assert c.port_entry("") is None
    assert c.profiles_for("youth") == ["youth-32g", "youth-4g"]
    assert c.profiles_for("") == ["default"]


def test_the_port_map_can_live_in_a_file_of_its_own(tmp_path: Path) -> None:
    """``station.ports_file`` supplies ``[[ports]]`` (a missing file: no map); setting
    ports in both places, or other keys in that file, is refused naming the file."""
    ports = tmp_path / "ports.toml"
    cfg = tmp_path / "fdffd.toml"
    cfg.write_text(f'[station]\nports_file = "{ports}"\n' + PORT_MAP)
    assert load_config(cfg).ports == []
    ports.write_text('[[ports]]\nlabel = "1"\npath = "loop:*"\naudience = "youth"\n')
    assert [p.label for p in load_config(cfg).ports] == ["1"]
    ports.write_text('[[ports]]\nlabel = "1"\npath = "loop:*"\n[job]\npasses = 2\n')
    with pytest.raises(ConfigError, match="only \\[\\[ports\\]\\] belongs here"):
        load_config(cfg)
    ports.write_text('[[ports]]\nlabel = "1"\npath = "loop:*"\n')
    cfg.write_text(f'[station]\nports_file = "{ports}"\n[[ports]]\nlabel = "2"\npath = "x*"\n')
    with pytest.raises(ConfigError, match="keep one"):
        load_config(cfg)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        (
            '[[ports]]\nlabel = "1"\npath = "a*"\n[[ports]]\nlabel = "1"\npath = "b*"\n',
            "used by two",
        ),
        ('[[ports]]\nlabel = "1"\npath = "a*"\naudience = "nobody"\n', "no [audiences.nobody]"),
        ('[[ports]]\nlabel = ""\npath = "a*"\n', "not a port label"),
        ('[[ports]]\nlabel = "1"\npath = "a[*"\n', "never closed"),
        ('[[ports]]\nlabel = "1"\npath = "a*"\nmedia = "cd"\n', "ports.0.media"),
        ("[audiences.youth]\nprofiles = []\n", "audiences.youth.profiles"),
        ('[audiences.youth]\nprofiles = ["a", "a"]\n', "listed twice"),
        ('[audiences.Youth]\nprofiles = ["a"]\n', "not an audience name"),
    ],
)
def test_bad_port_maps_fail_at_load(tmp_path: Path, toml: str, needle: str) -> None:
    cfg = tmp_path / "fdffd.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert needle in str(err.value)
