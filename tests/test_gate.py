"""The safety gate's decisions, as a pure function of device facts and policy."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.config import DrivesSection
from fdffd.devices.facts import DeviceFacts
from fdffd.job.gate import evaluate
from fdffd.sizes import GiB
from fdffd.text import clean_udev

NO_UDEV = "no udev data for block device 8:16: udev has no record of it; is systemd-udevd running?"
USB = DeviceFacts(
    path="/dev/sdz",
    name="sdz",
    bus="usb",
    port="pci-0000:00:14.0-usb-0:3:1.0-scsi-0:0:0:0",
    size_bytes=16 * GiB,
)
POLICY = DrivesSection()


def test_a_plain_usb_stick_is_admitted() -> None:
    """An unmounted, writable USB disk inside the size bounds passes."""
    assert evaluate(USB, POLICY) is None


def test_each_hard_rule_names_itself() -> None:
    """Every hard rule refuses with its own rule name and a reason naming the problem."""
    cases = {
        "exists": replace(USB, exists=False),
        "block-device": replace(USB, is_block=False),
        "whole-disk": replace(USB, whole_disk=False),
        "system-disk": replace(USB, hosts=("root",)),
        "mounted": replace(USB, mounted=("/media/stick",)),
        "swap": replace(USB, swap=("/dev/sdz2",)),
        "held": replace(USB, holders=("dm-0",)),
        "no-media": replace(USB, size_bytes=0),
        "read-only": replace(USB, read_only=True),
        "no-udev-data": replace(USB, udev_missing=NO_UDEV),
    }
    for rule, facts in cases.items():
        refusal = evaluate(facts, POLICY)
        assert refusal is not None and refusal.rule == rule, (rule, refusal)
    assert "/media/stick" in evaluate(cases["mounted"], POLICY).detail  # type: ignore[union-attr]
    assert "write-protected" in evaluate(cases["read-only"], POLICY).detail  # type: ignore[union-attr]
    assert "systemd-udevd" in evaluate(cases["no-udev-data"], POLICY).detail  # type: ignore[union-attr]


def test_without_udev_data_even_an_allowed_loop_device_is_refused() -> None:
    """No udev data: refused by its own rule, whatever the bus and policy say."""
    loop = replace(USB, bus="loop", name="loop3", port="loop:/dev/shm/t/a.img")
    lax = DrivesSection(allow_loop=True, buses=["usb", "ata", "nvme"], min_size=0)
    assert evaluate(loop, lax) is None
    for facts in (replace(loop, udev_missing=NO_UDEV), replace(USB, udev_missing=NO_UDEV)):
        refusal = evaluate(facts, lax)
        assert refusal is not None and refusal.rule == "no-udev-data"
        assert refusal.detail == NO_UDEV


def test_policy_rules() -> None:
    """Bus, port globs, size bounds and loop devices follow the configuration."""
    assert evaluate(replace(USB, bus="ata"), POLICY).rule == "bus"  # type: ignore[union-attr]
    loop = replace(USB, bus="loop", name="loop3")
    assert evaluate(loop, POLICY).rule == "bus"  # type: ignore[union-attr]
    assert evaluate(loop, DrivesSection(allow_loop=True)) is None
    ports = DrivesSection(ports=["pci-0000:00:14.0-usb-0:3:*"])
    assert evaluate(USB, ports) is None
    assert evaluate(replace(USB, port="pci-0000:00:14.0-usb-0:4:1.0"), ports).rule == "port"  # type: ignore[union-attr]
    assert evaluate(replace(USB, size_bytes=32 << 20), POLICY).rule == "size"  # type: ignore[union-attr]
    assert evaluate(replace(USB, size_bytes=9 << 40), POLICY).rule == "size"  # type: ignore[union-attr]


facts_strategy = st.builds(
    DeviceFacts,
    path=st.just("/dev/sdq"),
    name=st.just("sdq"),
    exists=st.booleans(),
    is_block=st.booleans(),
    whole_disk=st.booleans(),
    bus=st.sampled_from(["usb", "ata", "nvme", "loop", "mmc", ""]),
    port=st.sampled_from(["", "pci-0000:00:14.0-usb-0:1:1.0", "pci-0000:00:14.0-usb-0:2:1.0"]),
    size_bytes=st.integers(min_value=0, max_value=16 << 40),
    read_only=st.booleans(),
    mounted=st.lists(st.sampled_from(["/", "/mnt", "/media/x"]), max_size=2).map(tuple),
    swap=st.lists(st.just("/dev/sdq2"), max_size=1).map(tuple),
    holders=st.lists(st.sampled_from(["dm-0", "md127"]), max_size=2).map(tuple),
    hosts=st.lists(st.sampled_from(["root", "state_dir", "payload_dir"]), max_size=3).map(tuple),
    udev_missing=st.sampled_from(["", "", NO_UDEV]),
)
policy_strategy = st.builds(
    DrivesSection,
    buses=st.lists(st.sampled_from(["usb", "mmc", "ata"]), max_size=3),
    ports=st.lists(st.sampled_from(["pci-*-usb-0:1:*", "*"]), max_size=2),
    allow_loop=st.booleans(),
    min_size=st.sampled_from([0, 64 << 20, 1 << 30]),
    max_size=st.sampled_from([8 << 40, 16 << 40]),
)


@settings(max_examples=500, deadline=None)
@given(facts=facts_strategy, policy=policy_strategy)
def test_admitted_devices_break_no_rule(facts: DeviceFacts, policy: DrivesSection) -> None:
    """Whatever the facts and policy, an admitted device breaks none of the rules."""
    if evaluate(facts, policy) is not None:
        return
    assert facts.exists and facts.is_block and facts.whole_disk
    assert not (facts.mounted or facts.swap or facts.holders or facts.hosts or facts.read_only)
    assert not facts.udev_missing
    assert policy.min_size <= facts.size_bytes <= policy.max_size and facts.size_bytes > 0
    assert (facts.bus == "loop" and policy.allow_loop) or (
        facts.bus != "loop" and facts.bus in policy.buses
    )


@settings(max_examples=200, deadline=None)
@given(facts=facts_strategy)
def test_no_policy_switches_off_a_hard_rule(facts: DeviceFacts) -> None:
    """The most permissive policy still refuses a mounted, held, swap, system or read-only disk,
    and one udev has no record of."""
    lax = DrivesSection(
        buses=["usb", "ata", "nvme", "mmc"], allow_loop=True, min_size=0, max_size=1 << 60
    )
    if (
        facts.mounted
        or facts.swap
        or facts.holders
        or facts.hosts
        or facts.read_only
        or not facts.whole_disk
        or facts.udev_missing
    ):
        assert evaluate(facts, lax) is not None


@given(st.text(max_size=200))
def test_untrusted_strings_are_cleaned(untrusted: str) -> None:
    """Vendor and model strings lose control characters and stay short."""
    out = clean_udev(untrusted)
    assert len(out) <= 64
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_udev_escapes_are_decoded() -> None:
    """udev's \\x20 escapes in ID_VENDOR_ENC come out as spaces."""
    assert clean_udev("SanDisk\\x20Ultra\\x1b[31m") == "SanDisk Ultra[31m"


def test_a_drive_on_an_unmapped_port_is_refused_with_a_map() -> None:
    """With a port map, a port no entry's glob matches is refused (``unmapped-port``);
    a mapped one passes; without a map the port is not checked."""
    from fdffd.config import PortEntry

    mapped = [
        PortEntry(label="1", path="pci-0000:00:14.0-usb-0:1:*"),
        PortEntry(label="2", path="pci-0000:00:14.0-usb-0:3:*"),
    ]
    assert evaluate(USB, POLICY, mapped) is None
    refusal = evaluate(USB, POLICY, mapped[:1])
    assert refusal is not None and refusal.rule == "unmapped-port"
    assert "usb-0:3:1.0" in refusal.detail and "fdffctl ports learn" in refusal.detail
    assert evaluate(replace(USB, port=""), POLICY, mapped) is not None
    assert evaluate(USB, POLICY, []) is None
    # hard rules come first: a mounted drive on an unmapped port is refused as mounted
    hard = evaluate(replace(USB, mounted=("/m",)), POLICY, mapped[:1])
    assert hard is not None and hard.rule == "mounted"
