"""The port map in the station's status: mapped ports by label, in physical order, empty
ones included, each with its audience; unmapped drives after them; no map, as before."""

from __future__ import annotations

from fdffd.config import config_from_dict
from fdffd.station.ports import ordered_ports, port_key
from fdffd.station.status import PortStatus, StationStatus
from fdffd.station.view import render_status_text

USB = "pci-0000:00:14.0-usb-0:{}:1.0-scsi-0:0:0:0"
MAP = {
    "audiences": {"youth": {"profiles": ["y"]}, "elites": {"profiles": ["e"]}},
    "ports": [
        {"label": "C", "path": "pci-0000:00:14.0-usb-0:3:*", "audience": "youth"},
        {"label": "A", "path": "pci-0000:00:14.0-usb-0:1:*", "audience": "elites"},
        {"label": "B", "path": "pci-0000:00:14.0-usb-0:2:*"},
    ],
}


def _seen(cfg: object, port: str, device: str, **kw: object) -> tuple[str, PortStatus]:
    key, empty = port_key(cfg, port, device)  # type: ignore[arg-type]
    return key, empty.model_copy(update={"device": device, **kw})


def test_mapped_ports_come_in_physical_order_with_their_audience() -> None:
    cfg = config_from_dict(MAP)
    table = dict(
        [
            _seen(cfg, USB.format(7), "/dev/sdx", state="idle"),  # unmapped: after the map
            _seen(cfg, USB.format(1), "/dev/sdb", state="active", stage="image"),
        ]
    )
    shown = ordered_ports(cfg, table)
    assert [(p.name, p.audience, p.device) for p in shown] == [
        ("C", "youth", ""),
        ("A", "elites", "/dev/sdb"),
        ("B", "", ""),
        ("7", "", "/dev/sdx"),
    ]
    # two sticks in turn on one mapped port land on the same line
    key1, _ = port_key(cfg, USB.format(3), "/dev/sdc")
    key2, _ = port_key(cfg, USB.format(3).replace("1.0", "1.1"), "/dev/sdd")
    assert key1 == key2
    text = render_status_text(StationStatus(station="s", ports=shown), width=100)
    rows = [line for line in text.splitlines() if line and line[0] in "CAB7"]
    assert [r.split()[0] for r in rows] == ["C", "A", "B", "7"]
    assert rows[0].split()[1] == "youth" and rows[1].split()[1] == "elites"
    # the audience survives the control socket's JSON round trip
    again = StationStatus.read(StationStatus(ports=shown).to_json())
    assert [p.audience for p in again.ports][:2] == ["youth", "elites"]


def test_without_a_map_ports_are_named_from_their_path() -> None:
    cfg = config_from_dict({})
    table = dict([_seen(cfg, USB.format(4), "/dev/sde"), _seen(cfg, "loop:/x/y.img", "/dev/loop3")])
    shown = ordered_ports(cfg, table)
    assert [(p.name, p.audience) for p in shown] == [("4", ""), ("loop3", "")]


def test_status_says_which_profile_the_last_drive_got() -> None:
    """A finished drive's line names the profile it got (the audience's edition that fit)."""
    from fdffd.station.status import LastJob

    last = LastJob.of_record(
        {"verdict": "ok", "wiped": True, "payload": {"profile": "youth-small"}, "job_id": "a"}
    )
    assert last.profile == "youth-small"
    port = PortStatus(name="A", audience="youth", state="idle", last=last)
    text = render_status_text(StationStatus(station="s", ports=[port]), width=100)
    assert "profile youth-small" in text
    assert LastJob.of_record({"verdict": "ok", "payload": None}).profile is None
