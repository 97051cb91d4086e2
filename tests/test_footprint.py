"""The footprint's pure rules: media kind from udev, serials from the format time, the
copy's time spread."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fdffd.imaging.dates import CopyItem, copy_times
from fdffd.imaging.footprint import (
    bios_geometry,
    exfatprogs_serial,
    media_kind_from_udev,
    newfs_msdos_serial,
)


@pytest.mark.parametrize(
    ("props", "kind"),
    [
        ({"ID_DRIVE_FLASH_SD": "1", "ID_MODEL": "USB3.0_CRW_-SD"}, "sd"),
        ({"ID_DRIVE_MEDIA_FLASH_SD": "1"}, "sd"),
        ({"ID_MODEL": "Multi-Card", "ID_BUS": "usb"}, "sd"),
        ({"ID_MODEL": "STORAGE_DEVICE", "ID_MODEL_FROM_DATABASE": "SD/MMC Card Reader"}, "sd"),
        ({"DEVNAME": "/dev/mmcblk0", "ID_PATH": "platform-fe320000.mmc"}, "sd"),
        ({"ID_MODEL": "DataTraveler_3.0", "ID_BUS": "usb"}, "usb"),
        ({"ID_MODEL": "Cruzer_Blade", "ID_VENDOR": "SanDisk"}, "usb"),
        ({}, "usb"),
    ],
)
def test_media_kind_from_udev(props: dict[str, str], kind: str) -> None:
    assert media_kind_from_udev(props) == kind


def test_bios_geometry_by_media() -> None:
    assert (bios_geometry("sd").heads, bios_geometry("sd").sectors_per_track) == (4, 16)
    assert (bios_geometry("usb").heads, bios_geometry("usb").sectors_per_track) == (255, 63)
    with pytest.raises(ValueError):
        bios_geometry("floppy")


def test_serials_follow_the_formatters_rules() -> None:
    """newfs_msdos: (month.day + sec.centisec) << 16 | (year + hour.minute); mkfs.exfat:
    nanoseconds << 12 | seconds, both cut to 32 bits."""
    when = datetime(2026, 5, 6, 19, 41, 7)
    low = ((5 << 8) | 6) + ((7 << 8) | (123456 // 10))
    high = 2026 + ((19 << 8) | 41)
    assert newfs_msdos_serial(when, 123456) == ((low << 16) | high) & 0xFFFFFFFF
    assert exfatprogs_serial(1_778_000_000, 123_456_789) == (
        (123_456_789 << 12 | 1_778_000_000) & 0xFFFFFFFF
    )


def test_copy_times_spread_in_copy_order() -> None:
    """Creation times rise in copy order; sources are older; directories are modified
    when their last entry is added; the format precedes everything."""
    base = datetime(2026, 3, 1, 20, 0, 0)
    items = [
        CopyItem("d", None),
        CopyItem("d/a", 50_000_000),
        CopyItem("d/b", 10),
        CopyItem("c", 5),
    ]
    t = copy_times(base, items, b"seed")
    created = [t.entries[i.path].created for i in items]
    assert created == sorted(created) and created[0] > base
    assert created[2] - created[1] > timedelta(seconds=2)  # 50 MB at 6-20 MB/s
    for path in ("d/a", "d/b", "c"):
        e = t.entries[path]
        assert e.modified < base and e.accessed >= e.created
    assert t.entries["d"].modified >= t.entries["d/b"].created
    assert t.formatted < base
    assert copy_times(base, items, b"seed") == t
    assert copy_times(base, items, b"other").entries != t.entries
