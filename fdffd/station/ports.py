"""The station's ports as volunteers see them: with a port map (``[[ports]]``), every
mapped port by its printed label, in physical order, empty ones included, each with its
audience; drives on unmapped ports (refused by the gate) after them.  Without a map,
each port the station has seen, named from its path, as before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..config import Config
from .status import PortStatus, port_name

#: the key of a mapped port in the station's table (no ``ID_PATH`` starts like this)
_MAPPED = "port-map:"


def port_key(config: Config, port: str, device: str) -> tuple[str, PortStatus]:
    """The station's key for the drive ``device`` on ``port`` (udev ``ID_PATH``), and the
    empty status of that port: a mapped port is keyed by its label, so a stick on it
    always lands on the same line; otherwise the path (a loop device: its name)."""
    entry = config.port_entry(port)
    if entry is not None:
        return _MAPPED + entry.label, _empty(entry.label, entry.audience, port)
    # a loop device's port is its backing file; show it by device name instead
    key = os.path.basename(device) if port.startswith("loop:") else port
    key = key or os.path.basename(device) or "?"
    return key, PortStatus(port=key)


def _empty(label: str, audience: str, port: str = "") -> PortStatus:
    return PortStatus(port=port, name=label, audience=audience)


def ordered_ports(config: Config, ports: Mapping[str, PortStatus]) -> list[PortStatus]:
    """The ports the status shows, in order (see the module's docstring)."""
    mapped = []
    for entry in config.ports:
        seen = ports.get(_MAPPED + entry.label)
        base = seen if seen is not None else _empty(entry.label, entry.audience)
        mapped.append(base.model_copy(update={"name": entry.label, "audience": entry.audience}))
    others = [
        p.model_copy(update={"name": port_name(p.port, p.device)})
        for key, p in ports.items()
        if not key.startswith(_MAPPED)
    ]
    return mapped + others
