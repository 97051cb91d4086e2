"""The footprint a finished drive imitates, in one place (docs/imaging.md, "Footprint").

A drive should look like a memory card or stick that an Android phone formatted
(``vold``: ``sgdisk`` writes the partition table, ``newfs_msdos -O android -A``
formats FAT32, ``mkfs.exfat -n android`` formats exFAT on cards above 32,896 MiB)
and that a Windows 10/11 PC with Korean settings then filled by copying files.
Every byte of that footprint comes from open-source formatters, so fdffd can
produce it without copying anyone's proprietary boot code.

This module holds the constants of that footprint and the pure rules that depend
on the kind of media; the builders (``partition.py``, ``fat32.py``, ``exfat.py``)
and the plan read them from here.  Nothing here touches a device: the media kind
comes in as a string, decided from udev properties by ``media_kind_from_udev``
(called by whoever holds them) or from a port map's ``media`` key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

#: The kinds of media a job can tell apart.  ``sd``: an SD or microSD card (in a
#: card reader at the station; the footprint is a card formatted in a phone's slot).
#: ``usb``: a USB stick (formatted through a phone's USB port).
MEDIA_KINDS = ("sd", "usb")
DEFAULT_MEDIA = "usb"
#: The footprint's name in a job record (``filesystem.footprint``): the formatter whose
#: output the volume imitates (Android's vold: sgdisk, newfs_msdos, mkfs.exfat).
NAME = "android"

#: Android formats a public volume as exFAT when the whole device is larger than
#: this (PublicVolume::doFormat: "size > 32896LL * 1024 * 1024"), FAT32 otherwise.
ANDROID_EXFAT_ABOVE_BYTES = 32896 * 1024 * 1024

# --- FAT32: newfs_msdos as vold runs it ------------------------------------------------

#: ``-O android``: the OEM name field, space padded.
FAT32_OEM_NAME = b"android "
#: The boot sector's label field without ``-L``.
FAT32_NO_LABEL = b"NO NAME    "
#: Attribute byte newfs_msdos gives a volume-label entry (octal 050: ARCHIVE|VOLUME_ID).
FAT32_LABEL_ATTR = 0x28
#: Where newfs_msdos puts FSInfo and the backup boot sector (the first free
#: sectors after the boot sector, not Microsoft's 6).
FAT32_FSINFO_SECTOR = 1
FAT32_BACKUP_SECTOR = 2
#: Reserved sectors before ``-A`` pads them: 16 KiB worth, at least 4 sectors.
FAT32_BASE_RESERVED_BYTES = 16384
FAT32_MIN_RESERVED_SECTORS = 4

#: newfs_msdos' default cluster size by volume size in 512-byte units:
#: (largest sector count, sectors per cluster).  Above the last, 64 (32 KiB).
NEWFS_CLUSTER_STEPS: tuple[tuple[int, int], ...] = (
    (6000, 1),
    (1 << 17, 8),
    (1 << 19, 16),
    (1 << 21, 32),
)
NEWFS_LARGE_SPC = 64

#: The boot program newfs_msdos (BSD licence) places after the BPB at 0x5A:
#: it prints the message through the BIOS, waits for a key and reboots (INT 19h).
#: Assembled from these instructions: cli; xor ax,ax; mov ss,ax; mov sp,7C00h;
#: sti; mov ds,ax; call $+3; pop si; add si,19h; mov bx,7; cld; lodsb;
#: test al,al; jz +6; mov ah,0Eh; int 10h; jmp -11; xor ah,ah; int 16h; int 19h.
FAT32_BOOT_PROGRAM = (
    bytes.fromhex("fa31c08ed0bc007cfb8ed8e800005e83c619bb0700fcac84c07406b40ecd10ebf530e4cd16cd19")
    + b"\r\nNon-system disk\r\nPress any key to reboot\r\n\x00"
)
FAT32_BOOT_PROGRAM_OFFSET = 0x5A


def newfs_msdos_serial(when: datetime, microsecond: int) -> int:
    """The volume serial newfs_msdos derives from the local time it formats at."""
    low = ((when.month << 8) | when.day) + ((when.second << 8) | (microsecond // 10))
    high = when.year + ((when.hour << 8) | when.minute)
    return ((low << 16) | high) & 0xFFFFFFFF


# --- exFAT: exfatprogs' mkfs.exfat -----------------------------------------------------

#: vold's ``mkfs.exfat -n android`` labels every card it formats.
EXFAT_LABEL = "android"
#: mkfs.exfat aligns the FAT and the cluster heap to this boundary on the medium.
EXFAT_BOUNDARY_BYTES = 1 << 20


def exfatprogs_serial(unix_seconds: int, nanoseconds: int) -> int:
    """The volume serial mkfs.exfat derives from the clock (``tv_nsec << 12 | tv_sec``)."""
    return ((nanoseconds << 12) | unix_seconds) & 0xFFFFFFFF


# --- the copy: Windows 10/11, Korean settings ------------------------------------------

#: The OEM code page of short (8.3) names: Korean Windows (Unified Hangul Code).
SHORT_NAME_CODEPAGE = "cp949"
#: Korea (and Pyongyang since 2018) keep UTC+9: what Windows writes into exFAT's
#: UtcOffset fields (OffsetValid set, 36 quarter hours).
UTC_OFFSET_MINUTES = 9 * 60


# --- BIOS geometry the formatter saw ----------------------------------------------------


@dataclass(frozen=True)
class BiosGeometry:
    """Heads and sectors per track newfs_msdos copies from the kernel (HDIO_GETGEO)."""

    heads: int
    sectors_per_track: int


#: Linux's MMC driver reports 4 heads of 16 sectors for every card; the SCSI disk
#: driver (USB) derives 255/63 from the partition table sgdisk has just written.
BIOS_GEOMETRY = {"sd": BiosGeometry(4, 16), "usb": BiosGeometry(255, 63)}


def bios_geometry(media: str) -> BiosGeometry:
    if media not in BIOS_GEOMETRY:
        raise ValueError(f"unknown media kind {media!r} (expected one of {MEDIA_KINDS})")
    return BIOS_GEOMETRY[media]


_CARD_WORDS = ("SD", "MMC", "CARD", "READER", "MICROSD", "SDXC", "SDHC", "TF")


def media_kind_from_udev(props: Mapping[str, str]) -> str:
    """``sd`` when udev properties of a disk say it is a memory card, else ``usb``.

    Card readers announce the card through udev's ``ID_DRIVE_FLASH_SD`` /
    ``ID_DRIVE_MEDIA_FLASH_SD`` (set by the hwdb for known readers), a kernel MMC
    host (``ID_PATH`` with ``mmc``, ``DEVTYPE`` of an mmcblk disk), or a model
    string naming a card reader ("SD/MMC", "Card Reader", "Multi-Card").  A
    port map's ``media`` key, when the station has one, overrides this guess."""
    for key in ("ID_DRIVE_FLASH_SD", "ID_DRIVE_MEDIA_FLASH_SD", "ID_DRIVE_FLASH_MS"):
        if props.get(key) == "1":
            return "sd"
    kernel_name = props.get("DEVNAME", "").rsplit("/", 1)[-1]
    if "mmc" in props.get("ID_PATH", "") or kernel_name.startswith("mmcblk"):
        return "sd"
    words = " ".join(
        props.get(k, "") for k in ("ID_MODEL", "ID_MODEL_FROM_DATABASE", "ID_TYPE")
    ).upper()
    words = words.replace("_", " ").replace("/", " ").replace("-", " ")
    tokens = set(words.split())
    if tokens & set(_CARD_WORDS) or "MULTI CARD" in words or "CARDREADER" in words:
        return "sd"
    return "usb"


def known_constants() -> list[bytes]:
    """Byte strings of the footprint that the formatters on this machine (mkfs.fat,
    mkfs.exfat) do not write, for comparisons against references made with them."""
    return [FAT32_OEM_NAME, FAT32_BOOT_PROGRAM]
