"""What ``fdffctl status`` prints and what ``fdffctl watch`` paints: pure renderers of the status.

Input is the status model of ``fdffd.station.status`` (:class:`StationStatus`), or what the
control socket answered, read into it with :meth:`StationStatus.read` (a missing key, a wrong type
or a NaN becomes "unknown", never an exception). Every string is still untrusted and passes
through :func:`fdffd.text.clean_untrusted` before it is placed on a line, so drive vendor and
model strings and error messages cannot move the cursor, change colours or reorder text.

The words a volunteer reads live in one table, :data:`WORDS`; :func:`word_key` picks the entry
for a port from stable codes only: its state, and for a finished drive its record's verdict,
error code and gate rule (never the English message). ``docs/volunteer-card.md`` prints the same
phrases. A finished drive that was not wiped (refused, failed, pulled while it waited, ...) has
:data:`NOT_WIPED` before its message.

Every phrase is English in the source and translated where it is placed on a line
(:mod:`fdffd.i18n`: English or Korean, ``docs/volunteer-card.ko.md``). In another language than
English a finished job's message is said from its error code or gate rule (:data:`EXPLAINED`);
the record's English message is shown only for a code without words. Widths are counted in
terminal cells (:func:`text_width`: a Hangul syllable takes two), so Korean lines fit and line up.

The full-screen view (:func:`render_watch_lines`) returns ``(text, colour)`` lines; ``colour`` is
one of :data:`COLOURS`. Each port gets the richest layout that fits the height:

- 3 lines + a blank line: words; progress bar, stage, speed, ETA (or the message); the drive,
- 2 lines + a blank line, then 2 lines without the blank,
- 1 line + a blank line, then 1 compact line per port (words, bar, percent, stage, ETA),
- when even that does not fit, the first ports and a line saying how many more there are.

So 7 ports on an 80x24 terminal get two lines each, and 16 ports one compact line each (16 port
lines + header + footer = 18 of 24). Port order is the daemon's: a port never moves on screen.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fdffd.audit.record import VERDICTS as VERDICTS  # the one list; each has WORDS
from fdffd.i18n import N_, _, language
from fdffd.sizes import format_size
from fdffd.station.status import PortStatus, StationStatus, port_name
from fdffd.text import clean_untrusted

COLOURS = ("green", "red", "yellow", "cyan", "dim", "bold", "plain")
"""The colour names the renderers use; a terminal without colours maps them to attributes."""

WORDS: dict[str, tuple[str, str]] = {
    # verdicts of the port's last job
    "ok": (N_("DONE - pull it"), "green"),
    "rescued": (N_("DONE (rescued, smaller) - pull it"), "green"),
    "counterfeit": (N_("COUNTERFEIT - set aside"), "red"),
    "defective": (N_("BAD FLASH - set aside"), "red"),
    "failed": (N_("FAILED - try again or set aside"), "yellow"),
    "failed:removed": (N_("PULLED - plug it back in"), "yellow"),
    "refused": (N_("NOT ALLOWED - see operator"), "yellow"),
    "refused:write-protected": (N_("WRITE-PROTECTED - flip the switch"), "yellow"),
    "interrupted": (N_("INTERRUPTED - plug it in again"), "yellow"),
    # states without a finished job
    "active": (N_("WORKING - don't pull"), "cyan"),
    "queued": (N_("WAITING - don't pull"), "cyan"),
    "empty": (N_("EMPTY"), "dim"),
    "idle": (N_("NOT STARTED - see operator"), "yellow"),  # a drive the daemon has not taken
    "unknown": (N_("CHECK - see operator"), "yellow"),  # a state or verdict this view does not know
}
"""Every phrase a volunteer can see, with its colour, by :func:`word_key` (in English: the
renderers translate them with :func:`fdffd.i18n._`)."""

VERDICT_NAMES = {
    "ok": N_("ok"),
    "rescued": N_("rescued"),
    "counterfeit": N_("counterfeit"),
    "defective": N_("defective"),
    "failed": N_("failed"),
    "refused": N_("refused"),
    "interrupted": N_("interrupted"),
}
"""A verdict's name in the STATE column and the totals."""

STAGES = {
    "admit": N_("admit"),
    "probe": N_("probe"),
    "image": N_("image"),
    "verify": N_("verify"),
    "finish": N_("finish"),
    "queued": N_("queued"),
}
"""A job's stage by its code (``wipe-N`` is "wipe N")."""

STATES = {"empty": N_("empty"), "idle": N_("idle"), "unknown": N_("unknown")}
"""The STATE column of a port without a finished job."""

EXPLAINED = {
    "drive-removed": N_("it was pulled before its job ended"),
    "too-slow": N_("the drive is too slow"),
    "device-i-o": N_("the drive failed to read or write"),
    "job-failed": N_("the job failed"),
    "counterfeit": N_("it holds far less than it announces"),
    "defective": N_("its flash memory is bad"),
    "interrupted": N_("the station stopped during its job"),
    "interrupted-job": N_("the station stopped during its job"),
    "not-started": N_("the station restarted before its job began"),
    "payload-too-large": N_("the content does not fit on this drive"),
    "volume-too-small": N_("the drive is too small"),
    "refused": N_("the safety check refused it"),
    "rule:read-only": N_("it is write-protected"),
    "rule:exclusive": N_("another program is using it"),
    "internal": N_("an internal error: see the operator"),
}
"""What a finished job's message says, by error code or gate rule, for the views in another
language than English (records keep English messages; English views show them as they are)."""

#: the (verdict, code) and (verdict, gate rule) pairs that have words of their own
_BY_CODE = {("failed", "drive-removed"): "failed:removed"}
_BY_RULE = {("refused", "read-only"): "refused:write-protected"}

NOT_WIPED = N_("not wiped")
"""Put before the message of a finished drive that still holds what it came with."""

UNREACHABLE = N_("fdffd is not running - ask the operator")
"""The words shown when the daemon cannot be asked for its status."""

# -- untrusted strings and terminal cells ---------------------------------------------------------


def _cells(ch: str) -> int:
    # Wide and full-width characters take two cells; counting every other character as one cell
    # (even a combining mark, which takes none) errs towards lines that are too short, never long.
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    """The terminal cells ``text`` takes at most (wide characters count two)."""
    return sum(_cells(ch) for ch in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells."""
    if width <= 0:
        return ""
    if len(text) * 2 <= width:
        return text
    used = 0
    for i, ch in enumerate(text):
        used += _cells(ch)
        if used > width:
            return text[:i]
    return text


def _shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, ending in ``...`` when it had to be cut."""
    if text_width(text) <= width:
        return text
    if width < 4:
        return fit(text, width)
    return fit(text, width - 3).rstrip() + "..."


def _pad(text: str, width: int) -> str:
    text = fit(text, width)
    return text + " " * (width - text_width(text))


# -- reading the status ----------------------------------------------------------------------------


def _name(port: PortStatus) -> str:
    name = (
        clean_untrusted(port.name, 12)
        or clean_untrusted(port_name(port.port, port.device), 12)
        or "?"
    )
    audience = clean_untrusted(port.audience, 12)
    return f"{name} {audience}" if audience else name  # a mapped port and its audience


def _timestamp(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _has_drive(port: PortStatus) -> bool:
    return bool(clean_untrusted(port.device) or clean_untrusted(port.drive))


# -- words -----------------------------------------------------------------------------------------


def word_key(port: PortStatus | Mapping[str, Any]) -> str:
    """The :data:`WORDS` entry for a port: its state, or how its last job ended, read from the
    record's stable codes (verdict, error code, gate rule), never from its message."""
    port = PortStatus.read(port)
    if port.state != "idle":
        return port.state  # active, queued, unknown
    last = port.last
    if last is None:
        return "idle" if _has_drive(port) else "empty"
    if last.verdict is None:
        return "unknown"
    return (
        _BY_CODE.get((last.verdict, last.code or ""))
        or _BY_RULE.get((last.verdict, last.rule or ""))
        or last.verdict
    )


def volunteer_words(port: PortStatus | Mapping[str, Any]) -> tuple[str, str]:
    """The big words for a port and their colour, e.g. ``("DONE - pull it", "green")``."""
    words, colour = WORDS[word_key(port)]
    return _(words), colour


def _words(key: str) -> tuple[str, str]:
    words, colour = WORDS[key]
    return _(words), colour


def summary_line(status: StationStatus | Mapping[str, Any]) -> str:
    """The totals in a few words, e.g. ``"3 active, 1 queued, 41 done, 2 counterfeit"``: every
    verdict other than ok that happened is named with its count."""
    totals = StationStatus.read(status).totals
    parts = [_("{n} active").format(n=totals.active)]
    if totals.queued:
        parts.append(_("{n} queued").format(n=totals.queued))
    parts.append(_("{n} done").format(n=totals.done))
    for verdict in VERDICTS[1:]:
        n = totals.by_verdict.get(verdict, 0)
        if n:
            name = _(VERDICT_NAMES.get(verdict, verdict))
            parts.append(_("{n} {verdict}").format(n=n, verdict=name))
    if totals.unrecorded:
        parts.append(
            _("{n} record(s) waiting for the audit log (state disk full?)").format(
                n=totals.unrecorded
            )
        )
    return ", ".join(parts)


# -- small formats ---------------------------------------------------------------------------------


def format_eta(seconds: float | None) -> str:
    """``h:mm:ss``, or ``-`` when unknown."""
    if seconds is None or not seconds >= 0:
        return "-"
    total = int(seconds + 0.5)
    if total >= 1000 * 3600:
        return ">999h"
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def _speed(bps: float | None) -> str:
    if bps is None or bps < 0:
        return "-"
    return f"{min(bps / 1e6, 99999.0):.1f} MB/s"


def _percent_value(port: PortStatus) -> float | None:
    return None if port.percent is None else min(max(port.percent, 0.0), 100.0)


def _percent(port: PortStatus, decimals: int) -> str:
    value = _percent_value(port)
    return "-" if value is None else f"{value:.{decimals}f}%"


def _stage(port: PortStatus) -> str:
    stage = clean_untrusted(port.stage, 12)
    if stage.startswith("wipe-") and stage[5:].isdigit():
        return _("wipe {n}").format(n=stage[5:])
    return _(STAGES[stage]) if stage in STAGES else stage or "-"


def progress_bar(percent: float | None, width: int) -> str:
    """``[#####.....]`` in exactly ``width`` cells (at least 3); all dots when unknown."""
    inner = max(width, 3) - 2
    done = 0 if percent is None else round(inner * min(max(percent, 0.0), 100.0) / 100.0)
    return "[" + "#" * done + "." * (inner - done) + "]"


def _clock(status: StationStatus) -> str:
    now = _timestamp(status.now)
    if now is None:
        return ""
    try:
        return now.astimezone().strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return ""


def _uptime(status: StationStatus) -> str:
    now, started = _timestamp(status.now), _timestamp(status.started_at)
    if now is None or started is None:
        return ""
    try:
        seconds = (now - started).total_seconds()
    except OverflowError:
        return ""
    if seconds < 0:
        return ""
    days, rest = divmod(int(seconds), 86400)
    return (f"{days}d " if days else "") + format_eta(rest)


def _message(port: PortStatus) -> str:
    """The last job's message, after :data:`NOT_WIPED` when the drive was not wiped."""
    last = port.last
    if last is None:
        return ""
    message = clean_untrusted(last.message)
    if language() != "en" and message:
        key = f"rule:{last.rule}" if last.rule and f"rule:{last.rule}" in EXPLAINED else last.code
        message = _(EXPLAINED[key]) if key in EXPLAINED else message
    if last.wiped is False and last.verdict is not None:
        return f"{_(NOT_WIPED)}: {message}" if message else _(NOT_WIPED)
    profile = clean_untrusted(last.profile, 64)
    if profile and not message:
        return f"{_('profile')} {profile}"  # which edition of the port's audience it got
    return message


# -- fdffctl status ------------------------------------------------------------------------------

_ANSI = {
    "green": "\x1b[1;32m",
    "red": "\x1b[1;31m",
    "yellow": "\x1b[1;33m",
    "cyan": "\x1b[36m",
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
}
_RESET = "\x1b[0m"


def _paint(text: str, colour: str, color: bool) -> str:
    code = _ANSI.get(colour) if color else None
    return f"{code}{text}{_RESET}" if code and text else text


def _header(status: StationStatus) -> str:
    head = [clean_untrusted(status.station, 40) or "?"]
    version = clean_untrusted(status.version, 20)
    if version:
        head.append(f"fdffd {version}")
    uptime = _uptime(status)
    if uptime:
        head.append(_("up {time}").format(time=uptime))
    clock = _clock(status)
    if clock:
        head.append(clock)
    return ", ".join(head)


def render_status_text(
    status: StationStatus | Mapping[str, Any], *, color: bool = False, width: int = 100
) -> str:
    """What ``fdffctl status`` prints: the station and its totals, then one line per port (name,
    drive, state or stage, percent, speed, ETA, and for a finished drive its verdict in words),
    with a finished job's message on the next line. No line is wider than ``width``; ANSI
    colours only when ``color``."""
    status = StationStatus.read(status)
    width = max(width, 20)
    written = _("{size} written").format(size=format_size(status.totals.bytes_written))
    lines = [
        _paint(fit(_header(status), width), "bold", color),
        fit(f"{summary_line(status)}; {written}", width),
        "",
    ]
    ports = status.ports
    name_w = max([4, *(text_width(_name(p)) for p in ports)])
    # the drive column leaves room for the progress columns and for the longest words shown
    words_w = max([28, *(text_width(_words(word_key(p))[0]) for p in ports)])
    drive_w = min(max(width - (name_w + 2 + 2 + 11 + 2 + words_w), 10), 32)
    columns = (
        (_("PORT"), name_w),
        (_("DRIVE"), drive_w),
        (_("STATE"), 11),
        (_("DONE"), 6),
        (_("SPEED"), 10),
        (_("ETA"), 8),
    )
    lines.append(fit("  ".join(_pad(t, w) for t, w in columns), width))
    for port in ports:
        lines += _status_rows(port, color, width, name_w, drive_w)
    return "\n".join(line.rstrip() for line in lines)


def _status_rows(
    port: PortStatus, color: bool, width: int, name_w: int, drive_w: int
) -> list[str]:
    key = word_key(port)
    words, colour = _words(key)
    cells = [
        _pad(_name(port), name_w),
        _pad(_shorten(clean_untrusted(port.drive) or "-", drive_w), drive_w),
    ]
    if key in ("active", "queued"):
        cells += [
            _pad(_stage(port) if key == "active" else _(STAGES["queued"]), 11),
            _pad(_percent(port, 1), 6),
            _pad(_speed(port.speed_bps), 10),
            format_eta(port.eta_seconds),
        ]
        return [fit("  ".join(cells), width)]
    verdict = port.last.verdict if port.last is not None else None
    state = VERDICT_NAMES.get(verdict, verdict) if verdict else STATES.get(key, key)
    cells.append(_pad(_(state), 11))
    row = fit("  ".join(cells) + "  ", width)
    rows = [row + _paint(fit(words, width - text_width(row)), colour, color)]
    message = _message(port)
    if message:
        indent = " " * (name_w + 2)
        rows.append(indent + _shorten(message, width - len(indent)))
    return rows


# -- fdffctl watch -------------------------------------------------------------------------------

# lines per port and blank lines between ports, richest first
_LAYOUTS = ((3, 1), (2, 1), (2, 0), (1, 1), (1, 0))


def _watch_detail(port: PortStatus, key: str, width: int, speed: bool) -> str:
    """The progress line of an active port, ``[####....]  42%  image  21.0 MB/s  ETA 0:05:12``,
    with the bar taking the room left; the drive and the message for the others."""
    if key == "active":
        pct = _percent_value(port)
        # fixed-width fields, so that the bars of all active ports line up and grow together
        tail = f" {_percent(port, 0):>4}  {_pad(_stage(port), 8)}"
        if speed:
            tail += f"  {_speed(port.speed_bps):>10}"
        tail += f"  {_('ETA')} {format_eta(port.eta_seconds):>7}"
        bar_w = min(width - text_width(tail), 60)
        if bar_w < 7:
            return fit(" ".join(tail.split()), width)
        return progress_bar(pct, bar_w) + tail
    drive = clean_untrusted(port.drive)
    message = _message(port)
    text = f"{drive}: {message}" if drive and message else drive or message
    return _shorten(text, width)


def _port_rows(
    port: PortStatus, lines: int, width: int, words_w: int, name_w: int
) -> list[tuple[str, str]]:
    key = word_key(port)
    words, colour = _words(key)
    label = _pad(_("PORT {name}").format(name=_name(port)), name_w) + "  "
    indent = " " * text_width(label)
    room = width - text_width(label)
    drive = _shorten(clean_untrusted(port.drive), room)
    detail_colour = colour if key == "active" else "dim"
    if lines == 1:
        head = label + _pad(words, words_w) + "  "
        detail = _watch_detail(port, key, width - text_width(head), speed=False)
        return [(fit((head + detail).rstrip(), width), colour)]
    if lines == 2:
        return [
            (fit(label + words, width), colour),
            (
                fit(indent + _watch_detail(port, key, room, speed=True), width).rstrip(),
                detail_colour,
            ),
        ]
    if key == "active":
        second, third = _watch_detail(port, key, room, speed=True), drive
    else:
        second, third = drive, _shorten(_message(port), room)
    return [
        (fit(label + words, width), colour),
        (fit(indent + second, width).rstrip(), detail_colour),
        (fit(indent + third, width).rstrip(), "dim" if key == "active" else "plain"),
    ]


def render_watch_lines(
    status: StationStatus | Mapping[str, Any], width: int, height: int
) -> list[tuple[str, str]]:
    """The full-screen view for a volunteer across the table, as ``(text, colour)`` lines: a
    header, the ports in the richest layout that fits (module docstring), a footer with the
    totals and the time. At most ``height`` lines of at most ``width`` cells each."""
    if width <= 0 or height <= 0:
        return []
    status = StationStatus.read(status)
    ports = status.ports
    station = clean_untrusted(status.station, 40)
    header = _spread(f"FDFFD  {station}".rstrip(), _("q: quit"), width)
    footer = _spread(summary_line(status), _clock(status), width)
    if height == 1:
        return [(footer, "bold")]
    chrome_top = [(header, "bold")] if height >= 3 else []
    room = height - len(chrome_top) - 1
    body = _watch_body(ports, width, room)
    body += [("", "plain")] * (room - len(body))
    return [*chrome_top, *body, (footer, "bold")]


def _spread(left: str, right: str, width: int) -> str:
    """``left`` and ``right`` on one line, ``right`` flush right when there is room."""
    if right and text_width(left) + 2 + text_width(right) <= width:
        return left + " " * (width - text_width(left) - text_width(right)) + right
    return fit(left, width)


def _watch_body(ports: list[PortStatus], width: int, room: int) -> list[tuple[str, str]]:
    if room <= 0:
        return []
    n = len(ports)
    if n == 0:
        return [(fit(_("No ports yet - plug a drive in"), width), "dim")]
    name_w = max(text_width(_("PORT {name}").format(name=_name(p))) for p in ports)
    words_w = max(text_width(_words(word_key(p))[0]) for p in ports)
    for lines, gap in _LAYOUTS:
        if n * lines + (n - 1) * gap <= room:
            break
    else:
        lines, gap = 1, 0
    shown = ports if n <= room else ports[: room - 1]
    body: list[tuple[str, str]] = []
    for i, port in enumerate(shown):
        if i and gap:
            body.append(("", "plain"))
        body.extend(_port_rows(port, lines, width, words_w, name_w))
    if len(shown) < n:
        body.append(
            (
                fit(_("+{n} more ports - make the window taller").format(n=n - len(shown)), width),
                "yellow",
            )
        )
    return body


def render_unreachable_lines(detail: str, width: int, height: int) -> list[tuple[str, str]]:
    """The full screen shown while the daemon does not answer: :data:`UNREACHABLE` in the
    middle, the reason (cleaned) below it, and that the view keeps retrying."""
    if width <= 0 or height <= 0:
        return []
    message = [
        (_(UNREACHABLE), "red"),
        (_shorten(clean_untrusted(detail), width), "dim"),
        (_("retrying - this screen comes back by itself"), "dim"),
    ][:height]
    top = (height - len(message)) // 2
    lines: list[tuple[str, str]] = [("", "plain")] * top
    for text, colour in message:
        text = fit(text, width)
        lines.append((" " * ((width - text_width(text)) // 2) + text, colour))
    return lines
