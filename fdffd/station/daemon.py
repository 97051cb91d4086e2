"""The daemon: hotplug watch, station, control socket and systemd notifications, tied together.

SIGTERM and SIGINT stop it cleanly: running jobs are cancelled and recorded ``interrupted``,
queued drives stay in the job journal for the next start, the audit log stays whole, and
systemd hears ``STOPPING=1``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from ..audit import VERDICTS, StationKeys
from ..config import Config
from ..devices.hotplug import HotplugWatch
from ..errors import UsageError
from ..fsutil import make_state_dir
from ..log import get_logger
from .control import ControlServer
from .notify import sd_notify, watchdog_interval
from .station import Station
from .status import StationStatus


def status_line(status: StationStatus) -> str:
    """The systemd STATUS line, e.g. "3 active, 41 done, 2 counterfeit"."""
    t = status.totals
    parts = [f"{t.active} active"]
    if t.queued:
        parts.append(f"{t.queued} queued")
    parts.append(f"{t.done} done")
    for verdict in VERDICTS[2:]:  # the ones that are not a finished drive
        if t.by_verdict.get(verdict):
            parts.append(f"{t.by_verdict[verdict]} {verdict}")
    if t.unrecorded:
        parts.append(f"{t.unrecorded} records waiting for the audit log")
    return ", ".join(parts)


class Daemon:
    def __init__(self, config: Config) -> None:
        self.cfg = config
        self.log = get_logger(component="daemon", station=config.station.id)
        make_state_dir(config.station.state_dir)
        self.keys = StationKeys.load(config.station.state_dir)
        self.station = Station(config, self.keys)
        self.stop_event = threading.Event()
        self.control: ControlServer | None = None
        self.watch: HotplugWatch | None = None

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        if req["cmd"] == "status":
            return self.station.status().to_json()
        if req["cmd"] == "ping":
            return {"pong": True}
        raise UsageError(f"unknown command {req['cmd']!r}; known: status, ping")

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self.log.info("daemon.signal", signal=signal.Signals(signum).name)
        self.stop_event.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        recovered = self.station.recover()
        self.control = ControlServer(self.cfg.station.control_socket, self.handle)
        self.watch = HotplugWatch(self.station.on_event, self.station.on_enumerated)
        self.watch.start()
        self.log.info(
            "daemon.ready",
            recovered=recovered,
            workers=self.cfg.job.workers,
            socket=str(self.cfg.station.control_socket),
        )
        sd_notify("READY=1")
        tick = min(5.0, watchdog_interval() or 5.0)
        last = ""
        try:
            while not self.stop_event.wait(tick):
                self.station.sink.retry()
                line = status_line(self.station.status())
                if line != last:
                    sd_notify(f"STATUS={line}")
                    last = line
                sd_notify("WATCHDOG=1")
        finally:
            sd_notify("STOPPING=1")
            self.log.info("daemon.stopping")
            self.watch.stop()
            self.station.stop()
            self.control.close()
            self.log.info("daemon.stopped", status=status_line(self.station.status()))
        return 0
