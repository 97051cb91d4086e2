"""``fdffctl watch``: the live full-screen view (curses), and a plain fallback for pipes.

``fetch`` is whatever returns the daemon's status object (the control socket client); this module
only paints what :mod:`fdffd.station.view` renders. A ``fetch`` that raises (the daemon is not
running, the socket is not ours to read) shows :data:`~fdffd.station.view.UNREACHABLE` full
screen and is retried every interval; the view never shows a stale status as if it were live.
"""

from __future__ import annotations

import curses
import locale
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from fdffd.i18n import _
from fdffd.station.view import (
    UNREACHABLE,
    render_status_text,
    render_unreachable_lines,
    render_watch_lines,
)
from fdffd.text import clean_untrusted

Fetch = Callable[[], Any]

_QUIT_KEYS = frozenset({ord("q"), ord("Q")})


def run_watch(
    fetch: Fetch, *, interval: float = 1.0, until: Callable[[], bool] | None = None
) -> int:
    """Show the live view until ``q`` or Ctrl-C (or ``until()`` is true); 0 either way. When
    stdin or stdout is not a terminal, falls back to :func:`run_watch_plain` (so
    ``fdffctl watch | cat`` works)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return run_watch_plain(fetch, interval=interval, until=until)
    try:
        locale.setlocale(locale.LC_ALL, "")  # so curses encodes non-ASCII drive names
    except locale.Error:
        pass
    try:
        return curses.wrapper(_loop, fetch, max(interval, 0.05), until)
    except KeyboardInterrupt:
        return 0


def run_watch_plain(
    fetch: Fetch,
    *,
    interval: float = 1.0,
    out: TextIO | None = None,
    width: int = 100,
    count: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    until: Callable[[], bool] | None = None,
) -> int:
    """Print a status block (:func:`render_status_text`, no colours) every ``interval`` seconds,
    or the unreachable line while ``fetch`` raises; ``count`` blocks, or until Ctrl-C or the
    reader goes away (a closed pipe). Returns 0."""
    stream = sys.stdout if out is None else out
    shown = 0
    try:
        while count is None or shown < count:
            if shown:
                sleep(interval)
            try:
                block = render_status_text(fetch(), width=width)
            except Exception as exc:  # any failure to ask the daemon is shown, then retried
                block = f"{_(UNREACHABLE)} ({_describe(exc)})"
            stream.write(block + "\n\n")
            stream.flush()
            shown += 1
            if until is not None and until():
                return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        if stream is sys.stdout:
            # the reader left (`fdffctl watch | head`): stop writing, and keep the interpreter
            # from complaining when it flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 0
    return 0


def _describe(exc: BaseException) -> str:
    return clean_untrusted(f"{type(exc).__name__}: {exc}", 160)


class _Palette:
    """Curses attributes for the view's colour names; bold and reverse video stand in for
    colours on a terminal without them, so red still stands out."""

    def __init__(self) -> None:
        self.attrs: dict[str, int] = {
            "bold": curses.A_BOLD,
            "dim": curses.A_DIM,
            "plain": curses.A_NORMAL,
        }
        if curses.has_colors():
            curses.start_color()
            background = curses.COLOR_BLACK
            try:
                curses.use_default_colors()
                background = -1
            except curses.error:
                pass
            pairs = (
                ("green", curses.COLOR_GREEN, curses.A_BOLD),
                ("red", curses.COLOR_RED, curses.A_BOLD),
                ("yellow", curses.COLOR_YELLOW, curses.A_BOLD),
                ("cyan", curses.COLOR_CYAN, curses.A_NORMAL),
            )
            for number, (name, colour, extra) in enumerate(pairs, start=1):
                curses.init_pair(number, colour, background)
                self.attrs[name] = curses.color_pair(number) | extra
        else:
            self.attrs.update(
                green=curses.A_BOLD,
                red=curses.A_BOLD | curses.A_REVERSE,
                yellow=curses.A_BOLD | curses.A_UNDERLINE,
                cyan=curses.A_NORMAL,
            )

    def __getitem__(self, colour: str) -> int:
        return self.attrs.get(colour, curses.A_NORMAL)


def _paint(screen: curses.window, lines: list[tuple[str, str]], palette: _Palette) -> None:
    screen.erase()
    height, width = screen.getmaxyx()
    for y, (text, colour) in enumerate(lines[:height]):
        if not text:
            continue
        try:
            screen.addnstr(y, 0, text, width, palette[colour])
        except curses.error:
            pass  # writing the bottom-right cell moves the cursor off screen; the text is there
    screen.refresh()


def _loop(
    screen: curses.window, fetch: Fetch, interval: float, until: Callable[[], bool] | None = None
) -> int:
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    screen.keypad(True)
    palette = _Palette()
    status: Any = None
    problem: str | None = None
    next_fetch = 0.0
    while True:
        if time.monotonic() >= next_fetch:
            try:
                status, problem = fetch(), None
            except Exception as exc:  # not running, not allowed, bad answer: all shown, retried
                status, problem = None, _describe(exc)
            next_fetch = time.monotonic() + interval
            if until is not None and until():
                return 0
        height, width = screen.getmaxyx()
        if problem is None:
            lines = render_watch_lines(status, width, height)
        else:
            lines = render_unreachable_lines(problem, width, height)
        _paint(screen, lines, palette)
        screen.timeout(max(0, int((next_fetch - time.monotonic()) * 1000)))
        key = screen.getch()
        if key in _QUIT_KEYS:
            return 0
        # KEY_RESIZE and any other key: repaint now at the new size with the status we have
