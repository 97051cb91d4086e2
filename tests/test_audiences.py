"""Three audiences on three mapped ports, drives of different proven sizes: each drive
gets the largest edition of its port's audience that fits, and the record says which
and why the larger did not; a drive on no mapped port is refused."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fdffd.audit import StationKeys
from fdffd.payload import add_profile
from fdffd_testkit.fakedrive import FakeDrive, FakeSpec
from fdffd_testkit.loopdev import LoopDevice

from .cli_util import fdffctl

MiB = 1 << 20

#: profile name -> its one file's size (an audience lists its profiles largest first)
PROFILES = {
    "youth-big": 80 * MiB,
    "youth-small": 2 * MiB,
    "elites-big": 90 * MiB,
    "elites-small": 3 * MiB,
    "scholars": 1 * MiB,
}


@pytest.fixture
def port_dirs() -> Iterator[dict[str, Path]]:
    """A directory under /dev/shm per "port": a loop device's port is its backing file."""
    base = Path(tempfile.mkdtemp(prefix="fdffd-ports-", dir="/dev/shm"))
    dirs = {name: base / name for name in ("A", "B", "C", "D", "stray")}
    for d in dirs.values():
        d.mkdir()
    yield dirs
    shutil.rmtree(base, ignore_errors=True)


def _config(tmp_path: Path, dirs: dict[str, Path]) -> Path:
    for name, size in PROFILES.items():
        src = tmp_path / "src" / name
        src.mkdir(parents=True)
        (src / f"{name}.bin").write_bytes(os.urandom(size))
        add_profile(tmp_path / "payloads", name, src)
    ports = [("A", "youth"), ("B", "elites"), ("C", "youth"), ("D", "scholars")]
    text = f"""
[station]
id = "test-station"
state_dir = "{tmp_path / "state"}"
payload_dir = "{tmp_path / "payloads"}"
[drives]
allow_loop = true
[job]
profile = ""
counterfeit = "rescue"
[audiences.youth]
profiles = ["youth-big", "youth-small"]
[audiences.elites]
profiles = ["elites-big", "elites-small"]
[audiences.scholars]
profiles = ["scholars"]
"""
    for label, audience in ports:
        text += f'[[ports]]\nlabel = "{label}"\npath = "loop:{dirs[label]}/*"\n'
        text += f'audience = "{audience}"\n'
    cfg = tmp_path / "fdffd.toml"
    cfg.write_text(text)
    StationKeys.init(tmp_path / "state")  # what `fdffctl keys init` does, once
    return cfg


def _process(cfg: Path, dev: str) -> dict[str, object]:
    run = fdffctl("process", dev, "--config", str(cfg), "--json")
    assert run.stdout.strip(), run.stderr
    return run.record


def test_each_port_gets_its_audiences_edition_that_fits(
    tmp_path: Path,
    port_dirs: dict[str, Path],
    loop: Callable[..., LoopDevice],
    fake: Callable[..., FakeDrive],
) -> None:
    cfg = _config(tmp_path, port_dirs)
    big_youth = loop(128 * MiB, directory=port_dirs["A"])
    small_elite = loop(64 * MiB, directory=port_dirs["B"])
    # a fake announcing 256 MiB that holds 64: rescued, it gets the small youth edition
    rescued = fake(
        FakeSpec(announced=256 * MiB, real=64 * MiB, kind="wraparound"),
        directory=str(port_dirs["C"]),
    )
    scholar = loop(64 * MiB, directory=port_dirs["D"])
    stray = loop(64 * MiB, directory=port_dirs["stray"])

    want = {
        big_youth.path: ("A", "youth", "youth-big", "ok", [True]),
        small_elite.path: ("B", "elites", "elites-small", "ok", [False, True]),
        rescued.path: ("C", "youth", "youth-small", "rescued", [False, True]),
        scholar.path: ("D", "scholars", "scholars", "ok", None),
    }
    for dev, (label, audience, profile, verdict, fits) in want.items():
        rec = _process(cfg, dev)
        assert rec["verdict"] == verdict, rec
        assert rec["device"]["port_label"] == label  # type: ignore[index]
        payload = rec["payload"]
        assert isinstance(payload, dict)
        assert (payload["audience"], payload["profile"], payload["verified"]) == (
            audience,
            profile,
            True,
        )
        if fits is None:
            assert payload.get("choice") is None
        else:
            assert [t["fits"] for t in payload["choice"]] == fits
            for t in payload["choice"]:
                if not t["fits"]:
                    assert t["reason"].startswith("needs a ") and "G drive" in t["reason"]
                    assert str(PROFILES[t["profile"]]) not in t["reason"]

    rec = _process(cfg, stray.path)
    assert rec["verdict"] == "refused"
    assert rec["error"]["rule"] == "unmapped-port"  # type: ignore[index]
    assert rec["device"]["port_label"] is None  # type: ignore[index]


def test_a_fake_at_an_odd_size_gets_the_edition_that_fits(
    tmp_path: Path, fake: Callable[..., FakeDrive]
) -> None:
    """A wraparound fake announcing 256 MiB, holding 150 MiB and a bit: the large edition
    (170 MiB) would fit the announced size, not the proven one; the small edition is
    imaged, and the record says why the large one did not fit.  (Whether the probe or the
    verify pass finds the real size, the choice is made on the proven capacity.)"""
    for name, size in (("big", 170 * MiB), ("small", 2 * MiB)):
        src = tmp_path / "src" / name
        src.mkdir(parents=True)
        (src / f"{name}.bin").write_bytes(os.urandom(size))
        add_profile(tmp_path / "payloads", name, src)
    cfg = tmp_path / "fdffd.toml"
    cfg.write_text(
        f'[station]\nstate_dir = "{tmp_path / "state"}"\npayload_dir = "{tmp_path / "payloads"}"\n'
        '[drives]\nallow_loop = true\n[job]\nprofile = ""\ncounterfeit = "rescue"\n'
        '[audiences.all]\nprofiles = ["big", "small"]\n'
        '[[ports]]\nlabel = "1"\npath = "loop:*"\naudience = "all"\n'
    )
    StationKeys.init(tmp_path / "state")  # what `fdffctl keys init` does, once
    spec = FakeSpec(announced=256 * MiB, real=150 * MiB + 12 * 4096, kind="wraparound")
    run = fdffctl("process", fake(spec).path, "--config", str(cfg), "--json")
    assert run.code == 0, run.stderr
    rec = run.record
    assert rec["verdict"] == "rescued", rec
    assert rec["capacity"]["usable_bytes"] <= spec.real
    payload = rec["payload"]
    assert isinstance(payload, dict)
    assert (payload["profile"], payload["verified"]) == ("small", True)
    assert [(t["profile"], t["fits"]) for t in payload["choice"]] == [
        ("big", False),
        ("small", True),
    ]
