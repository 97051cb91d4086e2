"""The rate meter: a running job's speed, its stage's remaining time, and whether it is too slow.

A pure object fed with ``(stage, bytes done, bytes total, now)``; the station reads the
:class:`Rate` it returns into the port's status and fails the job when it is too slow.

- The speed is measured over the last ``window`` seconds of the current stage (a new stage
  starts a new measurement), and only once at least ``min(0.5, window / 2)`` seconds of samples
  exist, so the first instants of a stage show no speed rather than a wild one.
- ``eta_seconds`` is the time the *current stage* still needs at that speed: the job's later
  stages (another wipe pass, the image, the verify) are not in it.
- Too slow: the stage has run for at least ``window`` seconds, the measurement spans at least
  90 % of it, and the speed is below ``min_speed`` (0 turns the check off).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    percent: float | None
    #: bytes per second over the window, None until it can be measured
    speed_bps: float | None
    #: seconds the current stage still needs at ``speed_bps``, None when unknown
    eta_seconds: float | None
    too_slow: bool


class RateMeter:
    def __init__(self, window: float, min_speed: int) -> None:
        self.window = window
        self.min_speed = min_speed
        self.stage = ""
        self.stage_started = 0.0
        self.samples: deque[tuple[float, int]] = deque(maxlen=4096)

    def sample(self, stage: str, done: int, total: int, now: float) -> Rate:
        if stage != self.stage:
            self.stage, self.stage_started = stage, now
            self.samples.clear()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        first_t, first_done = self.samples[0]
        span = now - first_t
        speed = (done - first_done) / span if span >= min(0.5, self.window / 2) else None
        eta = round((total - done) / speed, 1) if speed and total else None
        too_slow = bool(
            self.min_speed
            and speed is not None
            and now - self.stage_started >= self.window
            and span >= self.window * 0.9
            and speed < self.min_speed
        )
        percent = round(100.0 * done / total, 1) if total else None
        return Rate(percent, speed, eta, too_slow)
