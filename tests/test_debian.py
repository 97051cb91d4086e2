"""The Debian package's sources: the default config, the lock, the version, the journald drop-in.

The package itself (built, installed into a fresh Debian 12 root, removed, purged) is tested by
``scripts/package-test``, run here by the one test marked ``package``: deselected by default
(``-m "not package"`` in pyproject.toml; it takes minutes), run with ``pytest -m package``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from fdffd import __version__
from fdffd.config import DEFAULT_CONFIG_PATH, Config

ROOT = Path(__file__).resolve().parent.parent
CONFFILE = ROOT / "etc" / "fdffd" / "fdffd.toml"
DEBIAN = ROOT / "debian"
DROPIN = ROOT / "systemd" / "journald.conf.d" / "fdffd.conf"
JOURNALD = Path("/lib/systemd/systemd-journald")
KEY_LINE = re.compile(r"^#(\w+) = (.+)$")


def _toml_value(value: Any) -> str:
    """A default as TOML (for the line the failure message asks for)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _conffile_keys() -> dict[str, dict[str, str]]:
    """{section: {key: value text}} of the commented ``#key = value`` lines."""
    sections: dict[str, dict[str, str]] = {}
    section = ""
    for line in CONFFILE.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
            sections.setdefault(section, {})
        elif m := KEY_LINE.match(line):
            assert section, f"{line!r} comes before any [section]"
            assert m.group(1) not in sections[section], f"{section}.{m.group(1)} twice"
            sections[section][m.group(1)] = m.group(2)
    return sections


#: config tables that are the operator's own (a list or a map of entries, empty by default):
#: the conffile shows each as a commented example, ``# [[ports]]`` or ``# [audiences.NAME]``
OPERATOR_TABLES = {"ports": "# [[ports]]", "audiences": "# [audiences."}


def _model_sections() -> dict[str, type[BaseModel]]:
    out = {}
    for name, field in Config.model_fields.items():
        if name in OPERATOR_TABLES:
            continue
        assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel), (
            f"Config.{name} is not a section: teach this test and the conffile about it"
        )
        out[name] = field.annotation
    return out


def test_conffile_shows_an_example_of_each_operator_table() -> None:
    """The port map and the audiences are the operator's own; the conffile shows how."""
    text = CONFFILE.read_text()
    assert set(OPERATOR_TABLES) <= set(Config.model_fields)
    for name, example in OPERATOR_TABLES.items():
        assert example in text, f"{CONFFILE.relative_to(ROOT)} shows no example of {name}"


def test_conffile_lists_every_key_with_its_default() -> None:
    """Every key of fdffd/config.py is in the shipped /etc/fdffd/fdffd.toml, commented out
    with its default, in its section, and nothing else is."""
    listed = _conffile_keys()
    problems = []
    for section, model in _model_sections().items():
        keys = listed.get(section, {})
        for key, field in model.model_fields.items():
            if key not in keys:
                problems.append(
                    f"[{section}] lacks its key {key}: add a comment line saying what it does "
                    f"and `#{key} = {_toml_value(field.get_default(call_default_factory=True))}`"
                )
        problems += [
            f"[{section}] {key}: not a key of fdffd/config.py"
            for key in keys
            if key not in model.model_fields
        ]
    problems += [
        f"[{s}]: not a section of fdffd/config.py" for s in listed if s not in Config.model_fields
    ]
    assert not problems, f"{CONFFILE.relative_to(ROOT)}:\n" + "\n".join(problems)

    # uncommented, every line gives the default (a size may be written "64MiB" for 67108864)
    text = re.sub(r"(?m)^#(\w+ = )", r"\1", CONFFILE.read_text())
    values = tomllib.loads(text)
    defaults = Config()
    for section, keys in values.items():
        for key, value in keys.items():
            loaded = Config.model_validate({section: {key: value}})
            got, want = (
                getattr(getattr(loaded, section), key),
                getattr(getattr(defaults, section), key),
            )
            if want is None:  # unset by default (TOML has no null): the line shows an example
                continue
            assert got == want, f"[{section}] #{key} = {value!r} is not the default {want!r}"


def test_conffile_as_shipped_is_the_defaults() -> None:
    assert Path("/" + str(CONFFILE.relative_to(ROOT))) == DEFAULT_CONFIG_PATH
    proc = subprocess.run(
        [sys.executable, "-m", "fdffd.cli.daemon", "--check-config", "--config", str(CONFFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "fdffd: config ok", proc.stderr
    values = tomllib.loads(CONFFILE.read_text())
    assert Config.model_validate(values) == Config()


def _locked() -> dict[str, str]:
    pins = {}
    for line in (DEBIAN / "requirements.txt").read_text().splitlines():
        if m := re.match(r"^([a-z0-9-]+)==(\S+) \\$", line):
            pins[m.group(1)] = m.group(2)
    return pins


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


def test_lock_pins_every_dependency_with_hashes() -> None:
    """debian/requirements.txt (scripts/package --lock) has every dependency of pyproject.toml,
    each with a sha256 (a new dependency must be locked before the package builds)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _locked()
    missing = [d for d in project["project"]["dependencies"] if _name(d) not in pins]
    assert not missing, f"not in debian/requirements.txt: {missing}; run scripts/package --lock"
    text = (DEBIAN / "requirements.txt").read_text()
    blocks = re.split(r"\n(?=[a-z0-9-]+==)", text.split("\n", 4)[-1].strip())
    assert all("--hash=sha256:" in b for b in blocks), "a pin without its sha256"
    build = (DEBIAN / "build-requirements.txt").read_text()
    for req in project["build-system"]["requires"]:
        assert re.search(rf"^{_name(req)}==\S+ \\\n    --hash=sha256:", build, re.M), req


def test_changelog_version_is_the_program_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.match(r"^fdffd \(([^)]+)\) \w+; urgency=\w+$", first)
    assert m, first
    assert m.group(1) == __version__, (
        f"debian/changelog is at {m.group(1)}, fdffd at {__version__}: add a changelog entry"
    )


def test_package_ships_the_repository_unit_and_rules() -> None:
    """debian/ links to the unit and the rules the other tests check, never a copy."""
    assert (DEBIAN / "fdffd.service").resolve() == ROOT / "systemd" / "fdffd.service"
    assert (DEBIAN / "fdffd.udev").resolve() == ROOT / "udev-rules" / "70-fdffd.rules"
    unit = (ROOT / "systemd" / "fdffd.service").read_text()
    assert "\nExecStart=/usr/bin/fdffd --config /etc/fdffd/fdffd.toml\n" in unit
    links = (DEBIAN / "fdffd.links").read_text().split()
    assert links == [
        "usr/lib/fdffd/bin/fdffd", "usr/bin/fdffd", "usr/lib/fdffd/bin/fdffctl", "usr/bin/fdffctl"
    ]  # fmt: skip


def test_maintainer_scripts_parse_and_guard_systemd_and_udev() -> None:
    for name in ("postinst", "prerm", "postrm"):
        script = DEBIAN / f"fdffd.{name}"
        assert os.access(script, os.X_OK), script
        proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        text = script.read_text()
        assert "#DEBHELPER#" in text
        for line in text.splitlines():
            if "udevadm control" in line or "deb-systemd-invoke" in line:
                assert line.rstrip().endswith("|| true"), f"{script.name}: {line.strip()}"
        if "udevadm" in text:
            assert "[ -S /run/udev/control ]" in text, f"{script.name}: reload without a guard"


def test_journald_dropin_uses_only_keys_journald_knows() -> None:
    """journald ignores an unknown key with a warning: every key must be one it parses (its
    gperf table holds "Journal.<key>"), and the station's choices are there."""
    keys = {}
    section = ""
    for line in DROPIN.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert section == "Journal", line
            keys[key] = value
    assert keys["Storage"] == "volatile" and keys["ReadKMsg"] == "no"
    assert keys["ForwardToSyslog"] == "no"
    known = set(re.findall(rb"Journal\.(\w+)\x00", JOURNALD.read_bytes()))
    assert {k.encode() for k in keys} <= known, f"unknown to journald: {set(keys)}"


@pytest.mark.package
def test_package_installs_runs_and_removes_on_a_fresh_debian_root() -> None:
    """scripts/package-test: build the amd64 package, install it on a fresh Debian 12 root,
    run it, remove and purge it (minutes; docs/packaging.md)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "package-test")], capture_output=True, text=True, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "== scripts/package-test: passed" in proc.stdout, out[-6000:]
    assert "stopped on SIGTERM (exit 0)" in proc.stdout
