"""The systemd unit and the udev rules: valid, hardened to target, and still able to do the job.

- ``systemd-analyze verify`` is clean and ``systemd-analyze security --offline=yes`` scores the
  unit at 2.5 or less (the score is printed in every run).
- A whole job runs as root with no capabilities, under the unit's own ``SystemCallFilter=`` and
  ``MemoryDenyWriteExecute=`` (an equivalent seccomp filter installed by this module, x86_64):
  a new dependency that needs a filtered call or writable+executable memory fails here, not
  on a station.
- The udev rules parse, and mark a USB disk (a loop device that a test-only rule dresses up as
  one, in a private mount namespace so the machine's udevd never sees the rules).
- (heavy, ``--heavy``) The checkout installs with pip into a new venv, as docs/operator.md
  says, and both commands run.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from fdffd_testkit.loopdev import LoopDevice

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "fdffd.service"
RULES = ROOT / "udev-rules" / "70-fdffd.rules"
MAX_EXPOSURE = 2.5
FAKE_PORT = "pci-0000:00:14.0-usb-0:1.3:1.0-scsi-0:0:0:0"  # port 3 of a hub on root port 1
PORT_EXAMPLE = 'ENV{ID_PATH}!="pci-0000:00:14.0-usb-0:1.*", GOTO="fdffd_end"'
CTL = [sys.executable, "-m", "fdffd.cli.ctl"]
NO_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--"]

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian package systemd)",
)


def _unit_values(key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


# --- the unit ---------------------------------------------------------------------------------


@needs_systemd_analyze
def test_unit_verifies_clean(tmp_path: Path) -> None:
    """`verify` checks every directive; it also wants ExecStart's binary to exist, which it
    does not on a build machine, so a copy points ExecStart at /usr/bin/true (same args)."""
    unit = tmp_path / "fdffd.service"
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/fdffd " in text
    unit.write_text(text.replace("ExecStart=/usr/bin/fdffd ", "ExecStart=/usr/bin/true "))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    # verify exits 0 even after "Unknown key" warnings: the output must be empty too
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stderr


@needs_systemd_analyze
def test_unit_exposure_is_at_most_2_5(capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"Overall exposure level for fdffd\.service: ([0-9.]+) (\w+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    score = float(m.group(1))
    with capsys.disabled():  # shown in every run, not only with -s
        print(f"\nsystemd-analyze security: fdffd.service exposure {score} {m.group(2)}")
    assert score <= MAX_EXPOSURE, proc.stdout


def test_unit_keeps_what_the_daemon_needs() -> None:
    assert _unit_values("Type") == ["notify"]
    assert _unit_values("NotifyAccess") == ["main"]
    assert _unit_values("WatchdogSec")
    assert _unit_values("StateDirectory") == ["fdffd"]
    assert _unit_values("RuntimeDirectory") == ["fdffd"]
    # the udev monitor needs netlink in the host network namespace
    assert _unit_values("RestrictAddressFamilies") == ["AF_UNIX AF_NETLINK"]
    assert _unit_values("PrivateNetwork") in ([], ["no"])
    # new drives must appear in /dev: no private /dev; the gate reads /proc/swaps
    assert _unit_values("PrivateDevices") in ([], ["no"])
    assert _unit_values("ProcSubset") in ([], ["all"])
    assert {"block-sd rw", "block-mmc rw"} <= set(_unit_values("DeviceAllow"))
    assert _unit_values("CapabilityBoundingSet") == [""]


# --- a job under the unit's policy ------------------------------------------------------------


def _expand(group: str) -> set[str]:
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager", group],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if item and not item.startswith("#"):
            names |= _expand(item) if item.startswith("@") else {item}
    return names


@cache
def _unit_syscalls() -> frozenset[str]:
    """The set SystemCallFilter= lines of the unit allow (allow list first, then ~ lines)."""
    allowed: set[str] = set()
    for value in _unit_values("SystemCallFilter"):
        deny = value.startswith("~")
        for item in value.lstrip("~").split():
            names = _expand(item) if item.startswith("@") else {item}
            allowed = allowed - names if deny else allowed | names
    return frozenset(allowed)


_UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
# classic BPF opcodes and seccomp return values
_LD, _JEQ, _JSET, _AND, _RET = 0x20, 0x15, 0x45, 0x54, 0x06
_ALLOW, _EPERM = 0x7FFF0000, 0x00050000 | 1
_AUDIT_ARCH_X86_64 = 0xC000003E
_ARG2 = 16 + 2 * 8  # offsetof(struct seccomp_data, args[2])


def _unit_policy_filter(allowed: frozenset[str]) -> list[tuple[int, int, int, int]]:
    """seccomp: MemoryDenyWriteExecute (as systemd's seccomp_memory_deny_write_execute: mmap
    W|X, mprotect/pkey_mprotect +X) then the allow list; everything else fails with EPERM."""
    nrs = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"#define __NR_(\w+) (\d+)", _UNISTD.read_text())
    }
    prog = [
        (_LD, 0, 0, 4),
        (_JEQ, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET, 0, 0, _EPERM),
        (_LD, 0, 0, 0),
        (_JEQ, 0, 4, nrs["mmap"]),
        (_LD, 0, 0, _ARG2),
        (_AND, 0, 0, 6),  # PROT_WRITE | PROT_EXEC
        (_JEQ, 0, 1, 6),
        (_RET, 0, 0, _EPERM),
        (_LD, 0, 0, 0),
        (_JEQ, 1, 0, nrs["mprotect"]),
        (_JEQ, 0, 3, nrs["pkey_mprotect"]),
        (_LD, 0, 0, _ARG2),
        (_JSET, 0, 1, 4),  # PROT_EXEC
        (_RET, 0, 0, _EPERM),
        (_LD, 0, 0, 0),
    ]
    for name in sorted(allowed):
        if name in nrs:
            prog += [(_JEQ, 0, 1, nrs[name]), (_RET, 0, 0, _ALLOW)]
    prog.append((_RET, 0, 0, _EPERM))
    return prog


def _enter_unit_policy() -> None:
    """Install the filter on this process (and what it execs); no way back."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _unit_policy_filter(_unit_syscalls())
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def _policy_unavailable() -> str | None:
    if platform.machine() != "x86_64":
        return f"the seccomp stand-in is written for x86_64; this machine is {platform.machine()}"
    if not _UNISTD.exists():
        return f"the system call numbers come from {_UNISTD} (Debian package linux-libc-dev)"
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze not installed (Debian package systemd)"
    if shutil.which("setpriv") is None:
        return "setpriv not installed (Debian package util-linux)"
    return None


def test_a_job_runs_as_root_without_capabilities_under_the_units_filter(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    if (why := _policy_unavailable()) is not None:
        pytest.skip(why)
    state = tmp_path / "state"
    config = tmp_path / "fdffd.toml"
    config.write_text(
        f'[station]\nid = "unit-policy"\nstate_dir = "{state}"\n'
        f'payload_dir = "{state}/payloads"\n[drives]\nallow_loop = true\n'
    )
    src = tmp_path / "payload" / "books"
    src.mkdir(parents=True)
    (src / "a.txt").write_bytes(os.urandom(300_000))
    subprocess.run(
        [*CTL, "payload", "add", "--config", str(config), "default", str(src.parent)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    audit_key = tmp_path / "audit-seal.key"  # sealing (libsodium) runs under the policy too
    for cmd in (
        ["keys", "audit-keygen", str(audit_key)],
        ["keys", "init", "--config", str(config), "--audit-pubkey", f"{audit_key}.pub"],
    ):
        subprocess.run([*CTL, *cmd], check=True, capture_output=True, cwd=ROOT)
    dev = loop(64 << 20)
    under_policy = [*NO_CAPS, sys.executable, __file__, "--under-unit-policy"]
    proc = subprocess.run(
        [*under_policy, "process", "--config", str(config), "--json", dev.path],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "ok"


# --- the package, installed as docs/operator.md says (heavy: it downloads from PyPI) -------------


@pytest.mark.heavy
def test_the_package_installs_into_a_venv_with_both_commands(tmp_path: Path) -> None:
    """`pip install` of the checkout into a new venv gives `fdffd` and `fdffctl` that run:
    the config check, and `audit verify` on a new station (no record yet)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "fdffd", src / "fdffd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys._base_executable
    venv = tmp_path / "opt"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(src)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    config = tmp_path / "fdffd.toml"
    config.write_text(f'[station]\nid = "installed"\nstate_dir = "{tmp_path}/state"\n')

    def run(*argv: str) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert run(str(venv / "bin" / "fdffd"), "--check-config", "--config", str(config)).startswith(
        "fdffd: config ok"
    )
    out = run(str(venv / "bin" / "fdffctl"), "audit", "verify", "--config", str(config))
    assert "no record yet" in out


# --- udev rules --------------------------------------------------------------------------------


def test_udev_rules_hide_station_drives_from_automounters() -> None:
    lines = [ln.strip() for ln in RULES.read_text().splitlines() if not ln.startswith("#")]
    assert any('ENV{UDISKS_IGNORE}="1"' in ln and 'ENV{UDISKS_AUTO}="0"' in ln for ln in lines)
    assert any('TAG+="fdffd"' in ln and 'ENV{FDFFD_STATION}="1"' in ln for ln in lines)
    # the port example is there, commented out
    assert f"#{PORT_EXAMPLE}" in RULES.read_text()


def _udevadm_test(rules_dir: Path, device: str) -> tuple[dict[str, str], str]:
    """`udevadm test` in a private mount namespace, with ``rules_dir`` bind-mounted over
    /etc/udev/rules.d (the running udevd, if any, never reads these rules) and a tmpfs over
    /run (`udevadm test` writes the device's tags into the udev database under /run/udev:
    keep them out of the machine's; and /run/udev need not exist, as in a container or a
    chroot where no udevd ever ran)."""
    script = (
        f'mount --bind "{rules_dir}" /etc/udev/rules.d && mount -t tmpfs tmpfs /run'
        f' && mkdir /run/udev && exec udevadm test --action=add "{device}"'
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    props = dict(
        line.split("=", 1) for line in proc.stdout.splitlines() if re.match(r"^[A-Z_]+=", line)
    )
    return props, out


def _udev_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "udev rule test needs root (a private mount namespace)"
    for tool, package in (("udevadm", "udev"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"udev rule test needs {tool} (Debian package {package})"
    if not Path("/etc/udev/rules.d").is_dir():
        return "udev rule test needs /etc/udev/rules.d (Debian package udev)"
    if not Path("/sys/class/block").is_dir():
        return "udev rule test needs sysfs mounted on /sys (udevadm test reads the device there)"
    return _private_mounts_unavailable()


@cache
def _private_mounts_unavailable() -> str | None:
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return (
            f"udev rule test needs a private mount namespace: {proc.stderr.strip()} (in a "
            "chroot, / must be a mount point: bind-mount the root onto itself before chroot)"
        )
    return None


@pytest.mark.parametrize(
    ("port_rule", "as_usb", "marked"),
    [
        ("", True, True),
        (PORT_EXAMPLE, True, True),
        ('ENV{ID_PATH}!="pci-0000:00:14.0-usb-0:2.*", GOTO="fdffd_end"', True, False),
        ("", False, False),
    ],
    ids=["usb-disk", "on-the-hubs-port", "other-port", "not-usb"],
)
def test_udev_rules_mark_usb_disks_on_the_stations_ports(
    tmp_path: Path,
    loop: Callable[..., LoopDevice],
    port_rule: str,
    as_usb: bool,
    marked: bool,
) -> None:
    if (why := _udev_unavailable()) is not None:
        pytest.skip(why)
    dev = loop(8 << 20)
    rules = tmp_path / "rules.d"
    rules.mkdir()
    text = RULES.read_text()
    if port_rule:
        text = text.replace(f"#{PORT_EXAMPLE}", port_rule)
    (rules / "70-fdffd.rules").write_text(text)
    if as_usb:  # what 60-persistent-storage.rules says about a stick on hub port 3
        (rules / "69-fdffd-test-fake-usb.rules").write_text(
            f'SUBSYSTEM=="block", KERNEL=="{dev.name}", '
            f'ENV{{ID_BUS}}="usb", ENV{{ID_PATH}}="{FAKE_PORT}"\n'
        )
    props, out = _udevadm_test(rules, f"/sys/class/block/{dev.name}")
    complaints = [ln for ln in out.splitlines() if "70-fdffd.rules:" in ln]
    assert not complaints, complaints  # udevadm names file:line for every rule it rejects
    assert "Reading rules file: /etc/udev/rules.d/70-fdffd.rules" in out
    got = {k: props.get(k) for k in ("UDISKS_IGNORE", "UDISKS_AUTO", "FDFFD_STATION")}
    if marked:
        assert got == {"UDISKS_IGNORE": "1", "UDISKS_AUTO": "0", "FDFFD_STATION": "1"}, out
        assert ":fdffd:" in props.get("TAGS", "")
    else:
        assert got == {"UDISKS_IGNORE": None, "UDISKS_AUTO": None, "FDFFD_STATION": None}
        assert ":fdffd:" not in props.get("TAGS", "")


if __name__ == "__main__" and sys.argv[1:2] == ["--under-unit-policy"]:
    # `python tests/test_packaging.py --under-unit-policy ARGS...`: fdffctl ARGS under the
    # unit's seccomp policy (the test above runs this through setpriv, without capabilities).
    _unit_syscalls()  # expand the groups first: that runs systemd-analyze
    _enter_unit_policy()
    sys.path.insert(0, str(ROOT))
    from fdffd.cli.ctl import main

    sys.argv = ["fdffctl", *sys.argv[2:]]
    sys.exit(main())
