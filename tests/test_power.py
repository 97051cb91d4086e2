"""Powering a finished drive off: the USB device is found in sysfs, and only a lone stick is cut.

The sysfs trees here are real files in tmp_path laid out as the kernel lays them out; the
drive that gets "powered off" is a fake tree's ``remove`` file.  Nothing on this machine is
ever powered off: the only real device used is a loop device, which is not on USB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fdffd.devices.power import (
    NOT_POWERED_OFF,
    NOT_USB,
    POWERED_OFF,
    power_off,
    shared_with,
    usb_device_dir,
)
from fdffd_testkit.loopdev import LoopDevice

PCI = "devices/pci0000:00/0000:00:14.0"


def _files(d: Path, **attrs: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, value in attrs.items():
        (d / name).write_text(value + "\n")
    return d


def _usb_device(d: Path, *, hub: bool = False, remove: bool = True, **attrs: str) -> Path:
    extra = {"remove": ""} if remove else {}
    return _files(
        d,
        uevent="MAJOR=189\nDEVTYPE=usb_device\nDRIVER=usb",
        idVendor=attrs.pop("idVendor", "0781"),
        idProduct=attrs.pop("idProduct", "5567"),
        busnum="1",
        devnum="7",
        devpath=attrs.pop("devpath", "1.3"),
        bDeviceClass="09" if hub else "00",
        authorized="1",
        **extra,
        **attrs,
    )


def _disk(usb_dev: Path, host: int, name: str, sys_root: Path, devnum: str) -> Path:
    """A SCSI disk below a USB device's storage interface, linked from class/block and dev/block."""
    iface = _files(usb_dev / f"{usb_dev.name}:1.0", uevent="DEVTYPE=usb_interface", authorized="1")
    scsi = _files(iface / f"host{host}" / f"target{host}:0:0" / f"{host}:0:0:0", vendor="SanDisk")
    disk = _files(scsi / "block" / name, dev=devnum, size="1000")
    (disk / "device").symlink_to(os.path.relpath(scsi, disk))
    _files(disk / f"{name}1", partition="1")
    for folder in ("class/block", "dev/block"):
        (sys_root / folder).mkdir(parents=True, exist_ok=True)
    (sys_root / "class/block" / name).symlink_to(disk)
    (sys_root / "dev/block" / devnum).symlink_to(disk)
    return disk


def _station(sys_root: Path) -> Path:
    """Root hub usb1 → hub 1-1 → stick 1-1.3 carrying sdb; returns the stick's directory."""
    root_hub = _usb_device(sys_root / PCI / "usb1", hub=True, devpath="0", idVendor="1d6b")
    hub = _usb_device(root_hub / "1-1", hub=True, devpath="1")
    stick = _usb_device(hub / "1-1.3", manufacturer="SanDisk", product="Cruzer\x1b[31m Blade")
    _disk(stick, 6, "sdb", sys_root, "8:16")
    return stick


def test_the_stick_is_found_not_its_interface_nor_its_hub(tmp_path: Path) -> None:
    stick = _station(tmp_path)
    assert usb_device_dir(tmp_path / "class/block/sdb") == stick


def test_a_partition_leads_to_its_disks_usb_device(tmp_path: Path) -> None:
    stick = _station(tmp_path)
    assert usb_device_dir(tmp_path / "class/block/sdb/sdb1") == stick


def test_sysfs_without_uevent_details_is_still_recognised(tmp_path: Path) -> None:
    stick = _station(tmp_path)
    (stick / "uevent").unlink()
    assert usb_device_dir(tmp_path / "class/block/sdb") == stick


def test_virtual_and_sata_disks_are_not_usb(tmp_path: Path) -> None:
    loop = _files(tmp_path / "devices/virtual/block/loop0", dev="7:0")
    scsi = _files(tmp_path / "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0")
    sda = _files(scsi / "block/sda", dev="8:0")
    (sda / "device").symlink_to(os.path.relpath(scsi, sda))
    assert usb_device_dir(loop) is None
    assert usb_device_dir(sda) is None


def test_the_other_slots_of_a_card_reader_are_seen(tmp_path: Path) -> None:
    reader = _usb_device(tmp_path / PCI / "usb1/1-2")
    _disk(reader, 7, "sdc", tmp_path, "8:32")
    _files(reader / "1-2:1.0/host7/target7:0:0/7:0:0:1/block/sdd", dev="8:48")
    assert shared_with(reader, "sdc") == ["sdd"]


def test_a_lone_stick_is_flushed_and_removed_from_the_bus(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    dev = loop(1 << 20)
    stick = _station(tmp_path)
    devnum = f"{os.major(os.stat(dev.path).st_rdev)}:{os.minor(os.stat(dev.path).st_rdev)}"
    (tmp_path / "dev/block" / devnum).symlink_to(tmp_path / "class/block/sdb")
    result = power_off(dev.path, sys_root=tmp_path)
    assert result.startswith(POWERED_OFF), result
    assert "1-1.3 (0781:5567 SanDisk Cruzer[31m Blade)" in result  # escape byte stripped
    assert (stick / "remove").read_text() == "1"
    assert (stick / "authorized").read_text() == "1\n"


def test_without_a_remove_attribute_the_device_is_deauthorized(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    dev = loop(1 << 20)
    stick = _station(tmp_path)
    (stick / "remove").unlink()
    st = os.stat(dev.path).st_rdev
    (tmp_path / "dev/block" / f"{os.major(st)}:{os.minor(st)}").symlink_to(
        tmp_path / "class/block/sdb"
    )
    assert power_off(dev.path, sys_root=tmp_path).startswith(POWERED_OFF)
    assert (stick / "authorized").read_text() == "0"


def test_a_shared_card_reader_stays_powered(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    dev = loop(1 << 20)
    reader = _usb_device(tmp_path / PCI / "usb1/1-2")
    _disk(reader, 7, "sdc", tmp_path, "8:32")
    _files(reader / "1-2:1.0/host7/target7:0:0/7:0:0:1/block/sdd", dev="8:48")
    st = os.stat(dev.path).st_rdev
    (tmp_path / "dev/block" / f"{os.major(st)}:{os.minor(st)}").symlink_to(
        tmp_path / "class/block/sdc"
    )
    result = power_off(dev.path, sys_root=tmp_path)
    assert result.startswith(NOT_POWERED_OFF) and "sdd" in result, result
    assert (reader / "remove").read_text() == "\n"


def test_a_failed_sysfs_write_is_reported_not_raised(
    tmp_path: Path, loop: Callable[..., LoopDevice]
) -> None:
    dev = loop(1 << 20)
    stick = _station(tmp_path)
    (stick / "remove").unlink()
    (stick / "remove").mkdir()  # opening it for writing fails, as a read-only sysfs would
    st = os.stat(dev.path).st_rdev
    (tmp_path / "dev/block" / f"{os.major(st)}:{os.minor(st)}").symlink_to(
        tmp_path / "class/block/sdb"
    )
    result = power_off(dev.path, sys_root=tmp_path)
    assert result.startswith(NOT_POWERED_OFF) and "remove" in result, result


def test_a_loop_device_is_not_a_usb_drive(loop: Callable[..., LoopDevice]) -> None:
    dev = loop(1 << 20)
    assert power_off(dev.path).startswith(NOT_USB)


def test_a_missing_device_or_a_plain_file_is_left_alone(tmp_path: Path) -> None:
    assert power_off(str(tmp_path / "sdz")).startswith(NOT_POWERED_OFF)
    plain = tmp_path / "file"
    plain.write_bytes(b"")
    assert power_off(str(plain)).startswith(NOT_USB)
