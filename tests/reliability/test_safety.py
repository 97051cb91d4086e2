"""Safety: the gate decides as its rules say (docs/pipeline.md); a refused drive keeps every byte.

The rules are those of docs/pipeline.md ("admit: the safety gate"). Three layers:

- an **oracle**, written here from a plain reading of the gate's rules and independent of
  ``fdffd.job.gate``, compared with the gate over generated device facts and policies;
- **live combinations** on real loop devices (mounted, swap, partitioned, held, read-only,
  hosting the state dir, and policy), where the expected decision comes from what the test
  built, not from gathered facts: this checks ``fdffd.devices.facts`` as well;
- **``fdffctl process``** on each kind of device that must be refused: exit 6, a record that
  names the rule, and the SHA-256 of the whole device unchanged.

Only loop devices (and a dm device over one) that these tests create are ever touched.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdffd.config import DrivesSection, config_from_dict, load_config
from fdffd.devices.blockdev import BlockDevice
from fdffd.devices.facts import DeviceFacts, gather, parse_mountinfo
from fdffd.errors import ConfigError, RefusedError
from fdffd.job.gate import evaluate
from fdffd.sizes import GiB, MiB
from fdffd_testkit.loopdev import LoopDevice, loop_device

from ..cli_util import device_sha256, fdffctl, write_config
from .support import FULL, RELIABILITY_SETTINGS, Tally

#: what the udev adapter says when udev has no record of a device
NO_UDEV = (
    "no udev data for block device 8:16: udev has no record of it in /run/udev/data "
    "(waited 2 s); is systemd-udevd running?"
)

# --- the oracle: the gate's rules (docs/pipeline.md, "admit"), read plainly -----------

#: "Hard rules that no config can switch off: whole disks only; nothing mounted, used as
#: swap, or held (LVM, dm, md); never the disk holding /, the state dir or the payload dir;
#: O_EXCL must succeed; write-protected media is refused with a message that says so;
#: without udev data the drive is refused."
#: (A device that does not exist, is no block device or has no medium is not a disk.)
HARD = frozenset(
    {
        "exists",
        "block-device",
        "whole-disk",
        "mounted",
        "swap",
        "held",
        "system-disk",
        "exclusive",
        "read-only",
        "no-media",
        "no-udev-data",
    }
)
#: "Policy: allowed buses (usb), optional port globs, size bounds."  Loop devices are a
#: bus of their own, allowed only by drives.allow_loop (docs/configuration.md).
POLICY = frozenset({"bus", "port", "size"})


def broken_rules(f: DeviceFacts, p: DrivesSection) -> set[str]:
    """Every rule of the gate that a device with facts ``f`` breaks under policy ``p``."""
    broken = set()
    if not f.exists:
        broken.add("exists")
    if not f.is_block:
        broken.add("block-device")
    if not f.whole_disk:
        broken.add("whole-disk")
    if f.mounted:
        broken.add("mounted")
    if f.swap:
        broken.add("swap")
    if f.holders:
        broken.add("held")
    if {"root", "state_dir", "payload_dir"} & set(f.hosts):
        broken.add("system-disk")
    if not f.exclusive:
        broken.add("exclusive")
    if f.read_only:
        broken.add("read-only")
    if f.size_bytes <= 0:
        broken.add("no-media")
    if f.udev_missing:
        broken.add("no-udev-data")
    allowed_bus = p.allow_loop if f.bus == "loop" else f.bus in p.buses
    if not allowed_bus:
        broken.add("bus")
    if p.ports and not any(fnmatchcase(f.port, g) for g in p.ports):
        broken.add("port")
    if not p.min_size <= f.size_bytes <= p.max_size:
        broken.add("size")
    return broken


#: what a refusal's message must mention, so a volunteer or operator knows what is wrong
def _names_the_problem(rule: str, f: DeviceFacts, p: DrivesSection, detail: str) -> bool:
    needles: dict[str, Callable[[], list[str]]] = {
        "exists": lambda: ["no such device"],
        "block-device": lambda: ["not a block device"],
        "whole-disk": lambda: ["partition"],
        "mounted": lambda: list(f.mounted),
        "swap": lambda: ["swap", *f.swap],
        "held": lambda: list(f.holders),
        "system-disk": lambda: ["holds"],
        "exclusive": lambda: ["O_EXCL"],
        "read-only": lambda: ["write-protected"],
        "no-media": lambda: ["no medium"],
        "no-udev-data": lambda: ["no udev data", "systemd-udevd"],
        "bus": lambda: ["allow_loop"] if f.bus == "loop" else ["drives.buses"],
        "port": lambda: ["drives.ports"],
        "size": lambda: ["min_size" if f.size_bytes < p.min_size else "max_size"],
    }
    return all(n in detail for n in needles[rule]())


def check_decision(f: DeviceFacts, p: DrivesSection) -> str | None:
    """Assert the gate agrees with the oracle; return the rule it refused by (or None)."""
    broken = broken_rules(f, p)
    refusal = evaluate(f, p)
    if not broken:
        assert refusal is None, (f, p, refusal)
        return None
    assert refusal is not None, ("admitted a device that breaks", broken, f, p)
    assert refusal.rule in broken, (refusal, broken, f, p)
    if broken & HARD:  # a broken hard rule is reported as such, whatever the policy says
        assert refusal.rule in HARD, (refusal, broken)
    assert _names_the_problem(refusal.rule, f, p, refusal.detail), (refusal, f)
    return refusal.rule


# --- generated facts and policies ---------------------------------------------------------

BUSES = ["usb", "ata", "scsi", "mmc", "nvme", "virtio"]
USB_PORT = "pci-0000:00:14.0-usb-0:{}:1.0-scsi-0:0:0:0"
PORTS = [USB_PORT.format(n) for n in (1, 2, 3)] + ["", "loop:/dev/shm/t/a.img", "platform-mmc"]
GLOBS = ["*", "pci-*-usb-0:1:*", "pci-*-usb-0:[23]:*", "loop:/dev/shm/t/*", "platform-*", "[!p]*"]
SIZES = [0, 1, 512, 64 * MiB - 1, 64 * MiB, 16 * GiB, 8 << 40, (8 << 40) + 1, 1 << 50]

policies: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {
        "buses": st.lists(st.sampled_from(BUSES), max_size=4, unique=True),
        "ports": st.lists(st.sampled_from(GLOBS), max_size=3),
        "allow_loop": st.booleans(),
        "min_size": st.sampled_from([0, 1, 64 * MiB, GiB, "64MiB", "1GB"]),
        "max_size": st.sampled_from([8 << 40, 16 * GiB, "8TiB", "2TB", 1 << 60]),
    }
).filter(lambda d: _bounded(d))


def _size(v: int | str) -> int:
    return config_from_dict({"drives": {"min_size": v, "max_size": 1 << 62}}).drives.min_size


def _bounded(d: dict[str, Any]) -> bool:
    return _size(d["min_size"]) <= _size(d["max_size"])


def _policy(d: dict[str, Any]) -> DrivesSection:
    """The policy of a real config, validated as fdffd loads it."""
    return config_from_dict({"drives": d}).drives


def _sometimes(values: st.SearchStrategy[Any], empty: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(empty), st.just(empty), values)


facts = st.builds(
    DeviceFacts,
    path=st.just("/dev/sdq"),
    name=st.just("sdq"),
    exists=st.just(True) | st.booleans(),
    is_block=st.just(True) | st.booleans(),
    whole_disk=st.just(True) | st.booleans(),
    bus=st.sampled_from([*BUSES, "loop", "", "firewire"]),
    port=st.sampled_from(PORTS),
    size_bytes=st.sampled_from(SIZES) | st.integers(0, 1 << 44),
    read_only=st.just(False) | st.booleans(),
    partitions=st.lists(st.sampled_from(["sdq1", "sdq2", "sdq3"]), max_size=3, unique=True).map(
        tuple
    ),
    mounted=_sometimes(
        st.lists(st.sampled_from(["/", "/media/a stick", "/mnt/x"]), min_size=1).map(tuple), ()
    ),
    swap=_sometimes(
        st.lists(st.sampled_from(["/dev/sdq2", "/dev/sdq"]), min_size=1).map(tuple), ()
    ),
    holders=_sometimes(st.lists(st.sampled_from(["dm-0", "md127"]), min_size=1).map(tuple), ()),
    hosts=_sometimes(
        st.lists(st.sampled_from(["root", "state_dir", "payload_dir"]), min_size=1).map(tuple), ()
    ),
    exclusive=st.just(True) | st.booleans(),
    udev_missing=st.just("") | st.just(NO_UDEV),
)

#: the tally fixture is one object for the session, so sharing it between examples is right
SETTINGS = settings(
    RELIABILITY_SETTINGS,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FAST_PURE = RELIABILITY_SETTINGS.max_examples * 10  # pure and cheap: many more examples


FAULTS: dict[str, dict[str, Any]] = {
    "absent": {"exists": False, "is_block": False},
    "not a block device": {"is_block": False},
    "partition": {"whole_disk": False},
    "mounted": {"mounted": ("/media/a stick",)},
    "swap": {"swap": ("/dev/sdq2",)},
    "held": {"holders": ("md127",)},
    "root": {"hosts": ("root",)},
    "state dir": {"hosts": ("state_dir",)},
    "payload dir": {"hosts": ("payload_dir", "root")},
    "O_EXCL fails": {"exclusive": False},
    "read-only": {"read_only": True},
    "no medium": {"size_bytes": 0},
    "no udev data": {"udev_missing": NO_UDEV},
}


@st.composite
def near_miss(draw: st.DrawFn) -> tuple[DeviceFacts, dict[str, Any]]:
    """A policy and a device that mostly fits it, with zero to two faults: many admitted
    devices, and refusals by exactly one rule, as well as the odd combination."""
    p = draw(policies)
    policy = _policy(p)
    loop = policy.allow_loop and draw(st.booleans())
    bus = "loop" if loop else draw(st.sampled_from(policy.buses or ["usb"]))
    port = draw(st.sampled_from(PORTS))
    if policy.ports and draw(st.integers(0, 3)):
        port = draw(
            st.sampled_from(
                [x for x in PORTS if any(fnmatchcase(x, g) for g in policy.ports)] or [port]
            )
        )
    lo, hi = max(policy.min_size, 1), min(policy.max_size, 1 << 50)
    size = draw(st.integers(lo, hi) | st.sampled_from([lo, hi]) | st.sampled_from(SIZES))
    f = DeviceFacts(path="/dev/sdq", name="sdq", bus=bus, port=port, size_bytes=size)
    for fault in draw(st.lists(st.sampled_from(sorted(FAULTS)), max_size=2, unique=True)):
        f = replace(f, **FAULTS[fault])
    if draw(st.integers(0, 5)) == 0:  # and now and then a policy fault
        f = replace(f, bus=draw(st.sampled_from(["firewire", "", "loop", *BUSES])))
    return f, p


@settings(SETTINGS, max_examples=FAST_PURE)
@given(case=st.one_of(st.tuples(facts, policies), near_miss()))
def test_gate_matches_the_rules(case: tuple[DeviceFacts, dict[str, Any]], tally: Tally) -> None:
    """Over generated facts and configs, the gate admits exactly what its rules admit."""
    f, p = case
    policy = _policy(p)
    rule = check_decision(f, policy)
    tally.count("safety", "decisions checked")
    if rule is None:
        tally.count("safety", "admitted (pure)")
    else:
        tally.count("safety", "refused (pure)")


@settings(SETTINGS, max_examples=FAST_PURE)
@given(f=facts.filter(lambda f: bool(broken_rules(f, DrivesSection()) & HARD)), p=policies)
def test_no_config_switches_off_a_hard_rule(
    f: DeviceFacts, p: dict[str, Any], tally: Tally
) -> None:
    """A device breaking a hard rule is refused by that kind of rule under any config."""
    lax = _policy(
        {"buses": [*BUSES, "firewire"], "allow_loop": True, "min_size": 0, "max_size": 1 << 62}
    )
    for policy in (_policy(p), lax):
        refusal = evaluate(f, policy)
        assert refusal is not None and refusal.rule in HARD, (f, policy, refusal)
    tally.count("safety", "decisions checked", 2)
    tally.count("safety", "hard-rule refusals checked", 2)


@pytest.mark.parametrize(
    "key",
    ["allow_mounted", "allow_swap", "allow_held", "allow_root", "hard_rules", "force", "exclusive"],
)
def test_no_config_key_turns_a_hard_rule_off(key: str, tally: Tally) -> None:
    """A key that would disable a hard rule does not exist: the config is refused, naming it."""
    for section in ("drives", "job", "station"):
        with pytest.raises(ConfigError, match=f"{section}.{key}: unknown key"):
            config_from_dict({section: {key: True}})
    tally.count("safety", "configs trying to lift a hard rule refused", 3)


def test_mountinfo_names_the_source_of_anonymous_devices() -> None:
    """A btrfs mount (device 0:N) is tied to its disk by its source; escapes are decoded."""
    text = (
        "36 25 0:45 / /media/my\\040stick rw,relatime shared:1 - btrfs /dev/sdq1 rw\n"
        "37 25 8:17 / /mnt rw - ext4 /dev/sdb1 rw\n"
        "garbage line\n"
    )
    mounts = parse_mountinfo(text)
    assert [(m.devnum, m.mount_point, m.source) for m in mounts] == [
        ((0, 45), "/media/my stick", "/dev/sdq1"),
        ((8, 17), "/mnt", "/dev/sdb1"),
    ]


# --- live devices: helpers -----------------------------------------------------------------


def _run(*cmd: str, input: str | None = None) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True, input=input, timeout=60)


def _mkfs_ext4(path: str) -> None:
    # no lazy init: nothing writes to the filesystem in the background once it is mounted
    _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", path)


def _wait_for(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@dataclass
class Rig:
    """What one live case built; torn down in reverse order by ``stack``."""

    dev: LoopDevice
    stack: ExitStack
    tmp: Path
    notes: list[str] = field(default_factory=list)

    def mount(self, source: str, *, ro: bool = True) -> Path:
        """Mount ``source`` (read-only by default: ext4 mounted read-write writes its
        superblock and journal by itself, later, which a checksum would blame on fdffd)."""
        mnt = Path(self.tmp / f"mnt-{secrets.token_hex(3)}")
        mnt.mkdir()
        _run("mount", "-o", "ro,noatime" if ro else "noatime", source, str(mnt))
        self.stack.callback(_umount, mnt)
        return mnt

    def partition(self) -> str:
        """One GPT partition, added with BLKPG (this kernel has no partition table parsers)."""
        _run("sfdisk", "-q", "--no-reread", self.dev.path, input="label: gpt\nstart=2048\n")
        # a partition a previous user of this loop number left in the kernel: drop it
        _partx("-d", self.dev.path, check=False)
        _partx("-a", self.dev.path)
        self.stack.callback(_partx, "-d", self.dev.path)
        part = f"{self.dev.path}p1"
        _wait_for(part)
        return part

    def swap(self, path: str) -> None:
        _run("mkswap", "-q", path)
        _run("swapon", path)
        self.stack.callback(_run, "swapoff", path)

    def exclusive_opener(self) -> None:
        """This process holds the disk open with O_EXCL (as mkfs or a partitioner would)."""
        fd = os.open(self.dev.path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        self.stack.callback(os.close, fd)

    def loop_over(self, path: str) -> LoopDevice:
        """A second loop device backed by ``path`` (a partition of ours)."""
        return self.stack.enter_context(loop_device(backing=Path(path)))


def _partx(op: str, disk: str, *, check: bool = True) -> None:
    """``partx -a`` / ``-d`` on our disk, retried: udevd may have a partition open a moment
    (probing it after our writes), and the kernel refuses to change it meanwhile."""
    deadline = time.monotonic() + 10
    while True:
        p = subprocess.run(["partx", op, disk], capture_output=True, text=True, timeout=60)
        if p.returncode == 0 or (
            op == "-d" and not list(Path("/sys/block", Path(disk).name).glob("*p[0-9]*"))
        ):
            return
        if time.monotonic() > deadline:
            if check:
                raise AssertionError(f"partx {op} {disk}: {p.stderr.strip()}")
            return
        time.sleep(0.05)


def _umount(mnt: Path) -> None:
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _node(tmp: Path, of: str) -> str:
    """A second device node for ``of`` under another name (``mknod``)."""
    path = tmp / f"alias-{secrets.token_hex(3)}"
    os.mknod(path, 0o600 | stat.S_IFBLK, os.stat(of).st_rdev)
    return str(path)


SIZE = 32 * MiB


@dataclass(frozen=True)
class Case:
    """A device fdffd must refuse: ``build`` returns the path to process and config changes."""

    name: str
    rule: str
    needle: str
    build: Callable[[Rig], tuple[str, dict[str, dict[str, Any]]]]
    read_only: bool = False
    command: str = "process"


def _mounted(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    _mkfs_ext4(r.dev.path)
    mnt = r.mount(r.dev.path)
    return r.dev.path, {"_needle": {"x": str(mnt)}}


def _partition_mounted(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    part = r.partition()
    _mkfs_ext4(part)
    mnt = r.mount(part)
    return r.dev.path, {"_needle": {"x": str(mnt)}}


def _a_partition(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    return r.partition(), {}


def _alias_of_partition(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    return _node(r.tmp, r.partition()), {}


def _alias_of_mounted(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    path, extra = _mounted(r)
    return _node(r.tmp, path), extra


def _swap(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    r.swap(r.dev.path)
    return r.dev.path, {}


def _swap_partition(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    r.swap(r.partition())
    return r.dev.path, {}


def _loop_over_partition(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    r.loop_over(r.partition())
    return r.dev.path, {}


def _excl(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
    r.exclusive_opener()
    return r.dev.path, {}


def _plain(**drives: Any) -> Callable[[Rig], tuple[str, dict[str, dict[str, Any]]]]:
    return lambda r: (r.dev.path, {"drives": drives})


def _hosts(which: str) -> Callable[[Rig], tuple[str, dict[str, dict[str, Any]]]]:
    def build(r: Rig) -> tuple[str, dict[str, dict[str, Any]]]:
        _mkfs_ext4(r.dev.path)
        # read-only, so nothing but fdffd could change the disk; the state dir is checked
        # with `probe` here, which writes no state (and see test_state_dir_disk_...)
        mnt = r.mount(r.dev.path)
        return r.dev.path, {"station": {which: str(mnt / "fdffd")}}

    return build


CASES = [
    Case("mounted", "mounted", "", _mounted),
    Case("partition mounted", "mounted", "", _partition_mounted),
    Case("a partition, not the disk", "whole-disk", "partition", _a_partition),
    Case("another node for a partition", "whole-disk", "partition", _alias_of_partition),
    Case("another node for a mounted disk", "mounted", "", _alias_of_mounted),
    Case("swap", "swap", "swap", _swap),
    Case("swap on a partition", "swap", "swap", _swap_partition),
    Case(
        "held by a loop device over its partition", "held", "loop device over", _loop_over_partition
    ),
    Case("O_EXCL held by another process", "exclusive", "O_EXCL", _excl),
    Case("read-only", "read-only", "write-protected", _plain(), read_only=True),
    Case("too small", "size", "min_size", _plain(min_size="64MiB")),
    Case("too large", "size", "max_size", _plain(max_size="16MiB")),
    Case("wrong port", "port", "drives.ports", _plain(ports=["loop:/nowhere/*"])),
    Case("loop devices not allowed", "bus", "allow_loop", _plain(allow_loop=False)),
    Case("hosts the state dir", "system-disk", "state dir", _hosts("state_dir"), command="probe"),
    Case("hosts the payload dir", "system-disk", "payload dir", _hosts("payload_dir")),
]


@contextmanager
def _rig(loop: Callable[..., LoopDevice], tmp: Path, *, read_only: bool = False) -> Iterator[Rig]:
    dev = loop(SIZE, read_only=read_only)
    with ExitStack() as stack:
        yield Rig(dev, stack, tmp)


def _pages_swapped_out() -> int:
    """Pages the kernel has written to any swap since boot (/proc/vmstat pswpout)."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("pswpout "):
            return int(line.split()[1])
    return 0


def _first_page(path: str) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return f.read(4096)


def _config(tmp: Path, dev: LoopDevice, changes: dict[str, dict[str, Any]]) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "drives": {"min_size": "1MiB", "ports": [f"loop:{dev.backing}"]}
    }
    for name, values in changes.items():
        if not name.startswith("_"):
            sections.setdefault(name, {}).update(values)
    return write_config(tmp, **sections)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_device_is_not_touched(
    case: Case, loop: Callable[..., LoopDevice], tmp_path: Path, tally: Tally
) -> None:
    """`fdffctl process` refuses the device (exit 6, the rule named) and no byte changes."""
    with _rig(loop, tmp_path, read_only=case.read_only) as rig:
        target, changes = case.build(rig)
        needle = case.needle or changes["_needle"]["x"]
        cfg = _config(tmp_path, rig.dev, changes)
        os.sync()
        paged_out = _pages_swapped_out()
        before, head_before = device_sha256(rig.dev.path), _first_page(rig.dev.path)
        run = fdffctl(case.command, target, "--config", str(cfg), "--json", timeout=120)
        after, head_after = device_sha256(rig.dev.path), _first_page(rig.dev.path)
        kernel_paged_out = _pages_swapped_out() != paged_out
    assert "Traceback" not in run.stderr, run.stderr
    assert run.code == 6, (run.code, run.stdout, run.stderr)
    if case.command == "process":
        assert run.record["verdict"] == "refused"
        message = run.record["error"]["message"]
    else:
        message = run.stderr
    assert f"(rule: {case.rule})" in message, message
    assert needle in message, message
    if case.rule == "swap" and kernel_paged_out:
        # the kernel paged memory out to an active swap meanwhile (it may, under any memory
        # pressure): its pages land past the header, which any write of fdffd would cover
        assert head_before == head_after, f"{case.name}: the refused swap's header changed"
    else:
        assert before == after, f"{case.name}: the refused device changed"
    tally.count("safety", "refused devices")
    tally.count("safety", "refused untouched")
    tally.count("safety", "wrong devices touched", 0)
    tally.case(
        "safety", case.name, f"{case.command}: refused ({case.rule}), exit 6, sha256 unchanged"
    )


def test_state_dir_disk_is_refused_and_logged_there(
    loop: Callable[..., LoopDevice], tmp_path: Path, tally: Tally
) -> None:
    """`process` refuses the disk its state dir is on (exit 6) and logs the refusal there."""
    with _rig(loop, tmp_path) as rig:
        _mkfs_ext4(rig.dev.path)
        state = rig.mount(rig.dev.path, ro=False) / "fdffd"
        cfg = _config(tmp_path, rig.dev, {"station": {"state_dir": str(state)}})
        run = fdffctl("process", rig.dev.path, "--config", str(cfg), "--json", timeout=120)
        assert run.code == 6, (run.stdout, run.stderr)
        assert "(rule: system-disk)" in run.record["error"]["message"]
        logged = (state / "audit.jsonl").read_text().splitlines()
        assert len(logged) == 1 and '"verdict":"refused"' in logged[0]
    # (the filesystem changed, by the audit line fdffd appended: so no checksum here)
    tally.count("safety", "refused devices")
    tally.case("safety", "process with the state dir on the disk", "refused (system-disk), logged")


def test_refused_non_devices(tmp_path: Path, tally: Tally) -> None:
    """A missing path and a regular file are refused with exit 6; the file keeps its bytes."""
    cfg = write_config(tmp_path, drives={"min_size": "1MiB"})
    plain = tmp_path / "disk.img"
    plain.write_bytes(os.urandom(1 << 20))
    before = device_sha256(str(plain))
    for path, rule in ((str(tmp_path / "nope"), "exists"), (str(plain), "block-device")):
        run = fdffctl("process", path, "--config", str(cfg), "--json", timeout=60)
        assert run.code == 6 and f"(rule: {rule})" in run.record["error"]["message"], run
        tally.count("safety", "refused devices")
        tally.count("safety", "refused untouched")
    assert device_sha256(str(plain)) == before
    tally.count("safety", "wrong devices touched", 0)


def test_the_checksum_sees_a_write(
    loop: Callable[..., LoopDevice], tmp_path: Path, tally: Tally
) -> None:
    """Control: the same loop device, eligible, is processed (exit 0) and its checksum changes."""
    dev = loop(SIZE)
    cfg = _config(tmp_path, dev, {})
    before = device_sha256(dev.path)
    run = fdffctl("process", dev.path, "--config", str(cfg), "--json", timeout=300)
    assert run.code == 0, (run.stdout, run.stderr)
    assert device_sha256(dev.path) != before
    tally.case("safety", "eligible control device", "processed, exit 0, sha256 changed")


# --- without udev data -------------------------------------------------------------------------

#: gather + gate in a process of its own; prints what it found and the events it logged
_GATHER = """
import json, sys
from pathlib import Path
if sys.argv[3] == "no-pyudev":
    sys.modules["pyudev"] = None  # as on a machine without pyudev: import fails
from structlog.testing import capture_logs
from fdffd.config import DrivesSection
from fdffd.devices.facts import gather
from fdffd.job.gate import evaluate
with capture_logs() as logs:
    f = gather(sys.argv[1], state_dir=Path("/nonexistent/state"),
               payload_dir=Path("/nonexistent/payloads"), udev_wait=float(sys.argv[2]))
r = evaluate(f, DrivesSection(allow_loop=True, min_size=0))
print(json.dumps({"bus": f.bus, "missing": f.udev_missing, "rule": r and r.rule,
                  "detail": r and r.detail, "events": [e["event"] for e in logs]}))
"""


def _without_udev(*cmd: str, db: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in a mount namespace of its own in which ``/run/udev`` is an empty tmpfs
    (udev's database as a machine without udevd has it), holding only the ``db`` entries
    given (name -> content).  Nothing outside the namespace sees the tmpfs."""
    script = "mount -t tmpfs fdffd-test-no-udev /run/udev && mkdir /run/udev/data"
    for name, content in (db or {}).items():
        script += f" && printf '%b' '{content}' > /run/udev/data/{name}"
    unshare = ["unshare", "--mount", "--propagation", "private"]
    return subprocess.run(
        [*unshare, "sh", "-c", f'{script} && exec "$@"', "sh", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _gather_json(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert run.returncode == 0, (run.stdout, run.stderr)
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def test_without_udev_data_the_drive_is_refused_and_untouched(
    loop: Callable[..., LoopDevice], tmp_path: Path, tally: Tally
) -> None:
    """The same loop device is admitted while udev knows it, and refused by `no-udev-data`
    (exit 6, the record says what is missing and what to do, no byte changed) when fdffctl
    runs where udev's database is empty."""
    dev = loop(SIZE)
    facts = gather(dev.path, state_dir=tmp_path / "state", payload_dir=tmp_path / "payloads")
    assert facts.udev_missing == "" and facts.udev, facts
    cfg = _config(tmp_path, dev, {})
    assert evaluate(facts, load_config(cfg).drives) is None
    before = device_sha256(dev.path)
    run = _without_udev(
        sys.executable, "-m", "fdffd.cli.ctl", "process", dev.path, "--config", str(cfg), "--json"
    )
    assert run.returncode == 6, (run.stdout, run.stderr)
    record = json.loads(run.stdout.strip().splitlines()[-1])
    message = record["error"]["message"]
    assert record["verdict"] == "refused" and "(rule: no-udev-data)" in message, message
    assert "/run/udev/data" in message and "systemd-udevd" in message, message
    assert device_sha256(dev.path) == before
    tally.count("safety", "refused devices")
    tally.count("safety", "refused untouched")
    tally.case("safety", "no udev data", "refused (no-udev-data), exit 6, sha256 unchanged")


def test_missing_udev_data_is_logged_by_name(loop: Callable[..., LoopDevice]) -> None:
    """Each way of having no udev data is logged under its own event and named in the
    refusal: no record, a record of an earlier medium, no udev library at all."""
    dev = loop(SIZE)
    devnum = os.stat(dev.path).st_rdev
    entry = f"b{os.major(devnum)}:{os.minor(devnum)}"
    cases = {
        "udev.not_initialized": ({}, "has no record of it"),
        "udev.stale": (
            {entry: "S:disk/by-diskseq/1\\nI:1234\\nE:ID_BUS=usb\\n"},
            "describes an earlier medium, diskseq 1",
        ),
    }
    for event, (db, words) in cases.items():
        run = _without_udev(sys.executable, "-c", _GATHER, dev.path, "0.2", "-", db=db)
        found = _gather_json(run)
        assert found["events"] == [event], found
        assert found["rule"] == "no-udev-data" and words in found["detail"], found
        assert found["bus"] == "loop", found  # the kernel's fact, even without udev
    run = subprocess.run(
        [sys.executable, "-c", _GATHER, dev.path, "0.2", "no-pyudev"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = _gather_json(run)
    assert found["events"] == ["udev.unavailable"], found
    assert found["rule"] == "no-udev-data" and "udev library cannot be used" in found["detail"]
    with_udev = _gather_json(
        subprocess.run(
            [sys.executable, "-c", _GATHER, dev.path, "2", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    )
    assert with_udev == {"bus": "loop", "missing": "", "rule": None, "detail": None, "events": []}


# --- live combinations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """What the test builds on a fresh loop device; the expected decision derives from it."""

    content: str  # blank | ext4 | ext4-mounted | part | part-ext4-mounted | swap-off | swap-on
    target_partition: bool
    excl_holder: bool
    read_only: bool
    state_dir_on_it: bool
    allow_loop: bool
    port_matches: bool
    size: int
    min_size: int
    max_size: int

    def expected(self) -> set[str]:
        """The rules this device breaks: from what was built, not observed."""
        broken = set()
        partitioned = self.content.startswith("part")
        if self.target_partition and partitioned:
            broken.add("whole-disk")
        if self.content.endswith("mounted"):
            broken.add("mounted")
        if self.content == "swap-on":
            broken.add("swap")
        if self.state_dir_on_it:
            broken.add("system-disk")
        if self.excl_holder or self.content in CLAIMED:
            broken.add("exclusive")  # what the kernel says, too, for a mount or a swap
        if self.read_only:
            broken.add("read-only")
        if not self.allow_loop:
            broken.add("bus")
        on_partition = self.target_partition and partitioned
        if on_partition or not self.port_matches:  # a partition has no loop port at all
            broken.add("port")
        # the partition starts at 1 MiB and ends before the GPT backup: about 1 MiB less
        size = self.size - 2 * MiB if on_partition else self.size
        if not self.min_size <= size <= self.max_size:
            broken.add("size")
        return broken


CLAIMED = ("ext4-mounted", "part-ext4-mounted", "swap-on")


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    read_only = draw(st.booleans()) and draw(st.booleans())
    content = (
        "blank"
        if read_only
        else draw(
            st.sampled_from(
                [
                    "blank",
                    "ext4",
                    "ext4-mounted",
                    "part",
                    "part-ext4-mounted",
                    "swap-off",
                    "swap-on",
                ]
            )
        )
    )
    size = draw(st.sampled_from([8 * MiB, 32 * MiB]))
    return Setup(
        content=content,
        target_partition=content.startswith("part") and draw(st.booleans()),
        # (a mount or an active swap claims the disk already: O_EXCL would fail for us too)
        excl_holder=content not in CLAIMED and draw(st.booleans()) and draw(st.booleans()),
        read_only=read_only,
        state_dir_on_it=content == "ext4-mounted" and draw(st.booleans()),
        allow_loop=draw(st.booleans()) or draw(st.booleans()),
        port_matches=draw(st.booleans()) or draw(st.booleans()),
        size=size,
        min_size=draw(st.sampled_from([1 * MiB, 16 * MiB])),
        max_size=draw(st.sampled_from([16 * MiB, 1 * GiB])),
    )


LIVE_EXAMPLES = 200 if FULL else 16


@settings(SETTINGS, max_examples=LIVE_EXAMPLES)
@given(s=setups())
def test_live_combinations_decide_as_built(
    s: Setup, loop_support: None, tmp_path_factory: pytest.TempPathFactory, tally: Tally
) -> None:
    """On real loop devices, gather + gate + O_EXCL open decide what the built setup implies."""
    tmp = tmp_path_factory.mktemp("combo")
    with ExitStack() as stack:
        dev = stack.enter_context(loop_device(s.size, read_only=s.read_only))
        rig = Rig(dev, stack, tmp)
        target = dev.path
        state_dir = tmp / "state"
        if s.content in ("ext4", "ext4-mounted"):
            _mkfs_ext4(dev.path)
            if s.content == "ext4-mounted":
                mnt = rig.mount(dev.path)
                if s.state_dir_on_it:
                    state_dir = mnt / "state"
        elif s.content.startswith("part"):
            part = rig.partition()
            if s.content == "part-ext4-mounted":
                _mkfs_ext4(part)
                rig.mount(part)
            if s.target_partition:
                target = part
        elif s.content.startswith("swap"):
            if s.content == "swap-on":
                rig.swap(dev.path)
            else:
                _run("mkswap", "-q", dev.path)
        if s.excl_holder:
            rig.exclusive_opener()
        policy = _policy(
            {
                "allow_loop": s.allow_loop,
                "ports": [f"loop:{dev.backing}" if s.port_matches else "loop:/nowhere/*"],
                "min_size": s.min_size,
                "max_size": s.max_size,
            }
        )
        os.sync()
        before = device_sha256(dev.path)
        f = gather(target, state_dir=state_dir, payload_dir=tmp / "payloads")
        refusal = evaluate(f, policy)
        if refusal is None:
            try:  # the last hard rule, as the job applies it: O_EXCL on open
                with BlockDevice(target):
                    pass
            except RefusedError as err:
                refusal_rule: str | None = str(err.fields["rule"])
            else:
                refusal_rule = None
        else:
            refusal_rule = refusal.rule
        after = device_sha256(dev.path)
    expected = s.expected()
    if not expected:
        assert refusal_rule is None, (s, f, refusal)
        tally.count("safety", "live combinations admitted")
    else:
        assert refusal_rule in expected, (s, expected, refusal_rule, f)
        if expected & HARD:
            assert refusal_rule in HARD, (s, expected, refusal_rule)
        assert before == after
        tally.count("safety", "refused devices")
        tally.count("safety", "refused untouched")
    tally.count("safety", "decisions checked")
    tally.count("safety", "live combinations checked")
    tally.count("safety", "wrong devices touched", 0)
