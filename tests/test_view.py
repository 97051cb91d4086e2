"""The status view and the live view: words, layouts, untrusted strings, a real terminal."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.audit.record import VERDICTS
from fdffd.station.status import LastJob, PortStatus, StationStatus, example_status
from fdffd.station.view import (
    COLOURS,
    NOT_WIPED,
    UNREACHABLE,
    WORDS,
    render_status_text,
    render_unreachable_lines,
    render_watch_lines,
    text_width,
    volunteer_words,
)
from fdffd.station.watch import run_watch_plain

REPO = Path(__file__).resolve().parent.parent
CARD = REPO / "docs" / "volunteer-card.md"
ANSI = re.compile(r"\x1b\[")


def _idle(verdict: str, message: str = "", **error: str) -> dict[str, Any]:
    return {
        "name": "1",
        "port": "p",
        "device": "/dev/sdb",
        "drive": "X",
        "state": "idle",
        "last": {
            "verdict": verdict,
            "message": message,
            "finished_at": "",
            "job_id": "",
            "code": None,
            "rule": None,
            **error,
        },
    }


def _many_ports(n: int) -> dict[str, Any]:
    """A station with ``n`` ports cycling through every state in the example."""
    status = example_status()
    sample = status["ports"]
    status["ports"] = [{**sample[i % len(sample)], "name": str(i + 1)} for i in range(n)]
    return status


def _assert_fits(lines: list[tuple[str, str]], width: int, height: int) -> None:
    assert len(lines) <= height
    for text, colour in lines:
        assert len(text) <= width and text_width(text) <= width, (width, text)
        assert colour in COLOURS
        assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text), repr(text)


# -- words --------------------------------------------------------------------------------------


def test_every_verdict_and_state_has_words_and_a_colour() -> None:
    """Each record verdict, and an active, queued and empty port, maps to words and a colour."""
    for verdict in VERDICTS:
        words, colour = volunteer_words(_idle(verdict))
        assert words and colour in COLOURS, verdict
    for state, expected in (("active", "WORKING - don't pull"), ("queued", "WAITING - don't pull")):
        assert volunteer_words({"state": state, "device": "/dev/sdb"})[0] == expected
    assert volunteer_words({"state": "idle", "device": "", "drive": ""}) == ("EMPTY", "dim")
    assert all(colour in COLOURS for _, colour in WORDS.values())


def test_the_verdicts_say_what_to_do() -> None:
    """ok and rescued say pull it; counterfeit and bad flash say set aside, in red."""
    assert volunteer_words(_idle("ok")) == ("DONE - pull it", "green")
    assert volunteer_words(_idle("rescued")) == ("DONE (rescued, smaller) - pull it", "green")
    assert volunteer_words(_idle("counterfeit")) == ("COUNTERFEIT - set aside", "red")
    assert volunteer_words(_idle("defective")) == ("BAD FLASH - set aside", "red")
    assert volunteer_words(_idle("interrupted")) == ("INTERRUPTED - plug it in again", "yellow")


def test_write_protected_refusals_say_flip_the_switch() -> None:
    """A refusal by the gate's read-only rule says flip the switch; other refusals send to the
    operator. The rule decides, not the message's words."""
    wp = _idle("refused", "anything at all", code="refused", rule="read-only")
    assert volunteer_words(wp) == ("WRITE-PROTECTED - flip the switch", "yellow")
    mounted = _idle("refused", "write-protected? (rule: read-only)", code="refused", rule="mounted")
    assert volunteer_words(mounted)[0] == "NOT ALLOWED - see operator"


def test_a_pulled_drive_says_plug_it_back_in() -> None:
    """A job failed with the error code drive-removed says so; other failures say try again,
    whatever their message says."""
    pulled = _idle("failed", "I/O error at 123", code="drive-removed")
    assert volunteer_words(pulled)[0] == "PULLED - plug it back in"
    other = _idle("failed", "drive removed during wipe-1", code="device-io")
    assert volunteer_words(other)[0] == "FAILED - try again or set aside"


def test_a_schema_1_record_is_read_by_its_codes() -> None:
    """A port's last job is read from a record's verdict, error code and rule; a schema 1
    refusal names its rule only in its message's fixed end, and has no ``wiped``."""
    rec = {
        "verdict": "refused",
        "job_id": "a" * 32,
        "finished_at": "2026-11-25T09:40:00.000Z",
        "error": {
            "code": "refused",
            "message": "refused /dev/sdb: write-protected: ... (rule: read-only)",
            "stage": "admit",
        },
    }
    last = LastJob.of_record(rec)
    assert (last.verdict, last.code, last.rule, last.wiped) == (
        "refused",
        "refused",
        "read-only",
        False,
    )
    assert LastJob.of_record({"verdict": "ok", "error": None}).wiped is True
    schema2 = {"verdict": "failed", "wiped": False, "error": {"code": "x", "rule": "r"}}
    assert (LastJob.of_record(schema2).rule, LastJob.of_record(schema2).wiped) == ("r", False)


def test_a_drive_not_wiped_says_so() -> None:
    """A finished drive that was not wiped has "not wiped" before its message, in the status
    text and in the live view; a wiped one does not."""
    status = example_status()
    text = render_status_text(status)
    assert f"{NOT_WIPED}: pulled while it waited" in text
    assert "holds 8.0 GiB" in text and f"{NOT_WIPED}: announces" not in text
    lines = [t for t, _ in render_watch_lines(status, 100, 40)]
    assert any(f"{NOT_WIPED}: pulled while it waited" in line for line in lines)


def test_the_status_model_reads_anything_without_raising() -> None:
    """The view's model turns wrong types, NaN and unknown states into "unknown" values."""
    read = StationStatus.read(
        {
            "totals": [1],
            "ports": [
                1,
                {"state": "dancing", "percent": float("nan"), "last": {"verdict": "exploded"}},
                {"state": None, "speed_bps": True, "name": 5},
            ],
        }
    )
    assert read.totals.active == 0 and len(read.ports) == 3
    assert read.ports[0] == PortStatus()
    assert read.ports[1].state == "unknown" and read.ports[1].percent is None
    assert read.ports[1].last is not None and read.ports[1].last.verdict is None
    assert read.ports[2].state == "idle" and read.ports[2].speed_bps is None
    assert read.ports[2].name == ""
    assert StationStatus.read("not a status") == StationStatus()
    assert StationStatus.read(example_status()).to_json() == example_status()


def test_unknown_states_and_verdicts_send_to_the_operator() -> None:
    """A verdict or state this view does not know is shown as a check, never as done."""
    assert volunteer_words(_idle("exploded"))[0] == "CHECK - see operator"
    assert volunteer_words({"state": "dancing"})[0] == "CHECK - see operator"


def test_the_volunteer_card_prints_every_phrase() -> None:
    """docs/volunteer-card.md names every phrase of the table, so the card matches the screen."""
    card = CARD.read_text()
    for words, _ in WORDS.values():
        assert words in card, words
    assert UNREACHABLE in card


# -- fdffctl status -----------------------------------------------------------------------------


def test_status_text_lists_every_port_with_totals_and_progress() -> None:
    """The status text names each port and drive, the totals, the percent, speed and ETA, and
    has no ANSI codes without color."""
    status = example_status()
    text = render_status_text(status)
    lines = text.splitlines()
    assert "2 active, 1 queued, 6 done, 1 counterfeit, 1 failed, 1 refused" in text
    for port in status["ports"]:
        assert any(line.startswith(port["name"] + " ") for line in lines), port["name"]
        if port["drive"]:
            assert port["drive"] in text
    assert "42.5%" in text and "21.0 MB/s" in text and "0:05:12" in text
    assert "COUNTERFEIT - set aside" in text and "holds 8.0 GiB" in text
    assert "WRITE-PROTECTED - flip the switch" in text
    assert not ANSI.search(text)
    assert all(len(line) <= 100 for line in lines)


def test_status_text_colours_only_when_asked() -> None:
    """With color=True the words carry ANSI colours."""
    assert ANSI.search(render_status_text(example_status(), color=True))


# -- fdffctl watch ------------------------------------------------------------------------------


@pytest.mark.parametrize("ports", [7, 16])
@pytest.mark.parametrize("size", [(80, 24), (200, 60), (100, 30), (40, 10)])
def test_watch_lines_fit_the_terminal(ports: int, size: tuple[int, int]) -> None:
    """The live view fits 80x24, 200x60 and others, for the example and for 16 ports."""
    width, height = size
    status = example_status() if ports == 7 else _many_ports(ports)
    _assert_fits(render_watch_lines(status, width, height), width, height)


def test_sixteen_ports_fit_on_an_80x24_terminal() -> None:
    """All 16 ports of a big hub show on 80x24, one compact row each, with the words."""
    lines = render_watch_lines(_many_ports(16), 80, 24)
    rows = [text for text, _ in lines if text.startswith("PORT ")]
    assert [row.split()[1] for row in rows] == [str(i) for i in range(1, 17)]
    assert any("DONE - pull it" in row for row in rows)
    assert any("[" in row and "42%" in row for row in rows)


def test_watch_shows_bars_words_and_footer() -> None:
    """The view shows PORT n, the bar of an active port, the verdict words in colour and the
    totals with the time."""
    lines = render_watch_lines(example_status(), 100, 30)
    text = "\n".join(t for t, _ in lines)
    assert "PORT 1" in text and "PORT 8" in text
    assert re.search(r"\[#+\.+\]\s+42%", text)
    assert ("PORT 4  DONE - pull it", "green") in lines
    assert ("PORT 5  COUNTERFEIT - set aside", "red") in lines
    assert lines[-1][0].startswith("2 active, 1 queued, 6 done")
    assert re.search(r"\d\d:\d\d:\d\d$", lines[-1][0])


def test_a_short_terminal_says_ports_are_hidden() -> None:
    """When even compact rows do not fit, the view says how many ports it could not show."""
    lines = render_watch_lines(_many_ports(16), 80, 10)
    assert lines[-2] == ("+9 more ports - make the window taller", "yellow")


def test_the_unreachable_screen_is_centred_and_fits() -> None:
    """While the daemon does not answer the screen says so, and the reason is cleaned."""
    lines = render_unreachable_lines("ConnectionRefusedError: \x1b[2J boom", 80, 24)
    _assert_fits(lines, 80, 24)
    assert any(UNREACHABLE in t for t, _ in lines)
    assert not any("\x1b" in t for t, _ in lines)


UNTRUSTED = st.text(alphabet=st.characters(codec=None), max_size=80) | st.sampled_from(
    ["\x1b[31mred", "a\rb\nc\td", "\u202eevil", "한국어 드라이브", "\x00\x9b2J", "e\u0301" * 50]
)
NUMBER = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)


@st.composite
def _random_port(draw: st.DrawFn) -> dict[str, Any]:
    last = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "verdict": st.sampled_from([*VERDICTS, "weird", ""]) | UNTRUSTED,
                "message": UNTRUSTED,
                "finished_at": UNTRUSTED,
                "job_id": UNTRUSTED,
                "code": st.none() | st.sampled_from(["drive-removed", "refused"]) | UNTRUSTED,
                "rule": st.none() | st.sampled_from(["read-only"]) | UNTRUSTED | NUMBER,
                "wiped": st.none() | st.booleans() | NUMBER,
            }
        )
    )
    return {
        "port": draw(UNTRUSTED),
        "name": draw(UNTRUSTED),
        "device": draw(UNTRUSTED),
        "drive": draw(UNTRUSTED),
        "state": draw(st.sampled_from(["active", "queued", "idle", "bogus"]) | UNTRUSTED),
        "stage": draw(st.none() | UNTRUSTED),
        "percent": draw(NUMBER),
        "speed_bps": draw(NUMBER),
        "eta_seconds": draw(NUMBER),
        "job_id": None,
        "last": last,
    }


@st.composite
def _random_status(draw: st.DrawFn) -> dict[str, Any]:
    status = example_status()
    status["station"] = draw(UNTRUSTED)
    status["now"] = draw(st.sampled_from([status["now"], "", "garbage"]) | UNTRUSTED)
    status["totals"] = {
        "active": draw(NUMBER),
        "queued": draw(NUMBER),
        "done": draw(NUMBER),
        "by_verdict": {"counterfeit": draw(NUMBER)},
        "bytes_written": draw(NUMBER),
    }
    status["ports"] = draw(st.lists(_random_port(), max_size=18))
    return status


@settings(max_examples=200, deadline=None)
@given(status=_random_status(), width=st.integers(1, 220), height=st.integers(1, 70))
def test_random_statuses_render_safely(status: dict[str, Any], width: int, height: int) -> None:
    """Random statuses (hostile strings, odd numbers) never raise, never exceed the terminal and
    never put a control character on it."""
    _assert_fits(render_watch_lines(status, width, height), width, height)
    text = render_status_text(status, width=max(width, 20))
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n" for ch in text)
    assert all(text_width(line) <= max(width, 20) for line in text.splitlines())


def test_plain_watch_prints_blocks_and_survives_a_missing_daemon() -> None:
    """The pipe-friendly watch prints the unreachable line while fetch fails, then the status."""
    answers: list[Any] = [ConnectionRefusedError(111, "Connection refused"), example_status()]

    def fetch() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    out = io.StringIO()
    assert run_watch_plain(fetch, out=out, count=2, sleep=lambda _: None) == 0
    text = out.getvalue()
    assert text.startswith(UNREACHABLE) and "ConnectionRefusedError" in text
    assert "DONE - pull it" in text and not ANSI.search(text)


# -- a real terminal ----------------------------------------------------------------------------

WATCH_SCRIPT = """\
import sys
from fdffd.station.status import example_status
from fdffd.station.watch import run_watch

def unreachable():
    raise ConnectionRefusedError(111, "Connection refused")

fetch = unreachable if sys.argv[2] == "down" else example_status
rc = run_watch(fetch, interval=0.2)
with open(sys.argv[1], "w") as f:
    f.write(str(rc))
"""


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10, check=False
    )


def _run_in_tmux(tmp_path: Path, mode: str, expect: str) -> tuple[str, str]:
    """Start the watch in a 100x30 tmux pane, wait for ``expect``, press q; the screen and the
    return code the watch wrote."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux): no terminal to run curses in")
    script = tmp_path / "watch.py"
    script.write_text(WATCH_SCRIPT)
    rc_file = tmp_path / "rc"
    socket = f"fdffd-test-{os.getpid()}-{mode}"
    env = f"PYTHONPATH={REPO} TERM=xterm-256color LANG=C.UTF-8"
    command = f"env {env} {sys.executable} {script} {rc_file} {mode}"
    try:
        started = _tmux(socket, "new-session", "-d", "-x", "100", "-y", "30", command)
        assert started.returncode == 0, started.stderr
        screen = ""
        deadline = time.monotonic() + 15
        while expect not in screen and time.monotonic() < deadline:
            time.sleep(0.1)
            screen = _tmux(socket, "capture-pane", "-p").stdout
        assert expect in screen, screen
        _tmux(socket, "send-keys", "q")
        deadline = time.monotonic() + 10
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return screen, rc_file.read_text() if rc_file.exists() else "(no exit)"
    finally:
        _tmux(socket, "kill-server")


def test_watch_runs_in_a_real_terminal_and_quits_on_q(tmp_path: Path) -> None:
    """Under tmux the curses view shows the port rows and DONE - pull it, and q exits with 0."""
    screen, rc = _run_in_tmux(tmp_path, "up", "DONE - pull it")
    for n in range(1, 9):
        assert f"PORT {n}" in screen
    assert "COUNTERFEIT - set aside" in screen and "42%" in screen
    assert rc == "0"


def test_watch_says_the_daemon_is_not_running(tmp_path: Path) -> None:
    """Under tmux, a fetch that fails shows the not-running screen, and q still exits."""
    screen, rc = _run_in_tmux(tmp_path, "down", UNREACHABLE)
    assert "ConnectionRefusedError" in screen
    assert rc == "0"
