"""English and Korean: the catalogs are complete and compiled, the language is chosen as the docs
say, and the Korean view fits an 80x24 terminal (tmux): nothing cut, nothing misaligned."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from fdffd import i18n
from fdffd.station.status import example_status
from fdffd.station.view import (
    EXPLAINED,
    NOT_WIPED,
    STAGES,
    UNREACHABLE,
    VERDICT_NAMES,
    WORDS,
    render_status_text,
    render_watch_lines,
    text_width,
    volunteer_words,
)

REPO = Path(__file__).resolve().parent.parent
KO_PO = REPO / "fdffd/locale/ko/LC_MESSAGES/fdffd.po"


@pytest.fixture
def korean() -> Iterator[None]:
    i18n.use("ko")
    try:
        yield
    finally:
        i18n.use("en")


def _catalog() -> dict[str, str]:
    with KO_PO.open("rb") as f:
        return {str(m.id): str(m.string) for m in read_po(f) if m.id}


def test_every_marked_string_has_a_korean_translation() -> None:
    """What scripts/catalogs extracts from fdffd/ is all in ko.po, translated, and nothing else."""
    marked = {str(found[2]) for found in extract_from_dir(str(REPO / "fdffd"))}
    catalog = _catalog()
    assert marked == set(catalog), "run scripts/catalogs"
    assert not [k for k, v in catalog.items() if not v], "untranslated strings in ko.po"
    # every phrase of the view's tables is marked (a table entry is translated where it is read)
    tables = [w for w, _ in WORDS.values()] + [*VERDICT_NAMES.values(), *STAGES.values()]
    assert set(tables + list(EXPLAINED.values())) <= marked


def test_each_mo_file_is_its_po_file_compiled() -> None:
    with KO_PO.open("rb") as f:
        catalog = read_po(f)
    assert not catalog.fuzzy, "a fuzzy catalog is not compiled: clear its header's fuzzy flag"
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    assert KO_PO.with_suffix(".mo").read_bytes() == compiled.getvalue(), "run scripts/catalogs"


@pytest.mark.parametrize(
    ("env", "configured", "expected"),
    [
        ({}, None, "en"),
        ({"LANG": "ko_KR.UTF-8"}, None, "ko"),
        ({"LANG": "C.UTF-8"}, "ko", "ko"),  # station.language wins over the locale
        ({"LC_ALL": "ko_KR.UTF-8"}, "en", "en"),
        ({"LANGUAGE": "ko", "LANG": "C"}, "en", "ko"),  # LANGUAGE wins over everything
        ({"LANGUAGE": "fr:ko"}, None, "ko"),  # a language without a catalog is skipped
        ({"LANGUAGE": "fr", "LANG": "ko_KR.UTF-8"}, None, "ko"),
        ({"LC_MESSAGES": "en_US.UTF-8", "LANG": "ko_KR.UTF-8"}, None, "en"),
        ({"LANG": "de_DE.UTF-8"}, None, "en"),
    ],
)
def test_the_language_is_chosen_as_the_docs_say(
    env: dict[str, str], configured: str | None, expected: str
) -> None:
    assert i18n.choose(configured, env) == expected


def test_korean_words_come_from_codes_and_english_stays_the_default(korean: None) -> None:
    ports = example_status()["ports"]
    assert volunteer_words(ports[3]) == ("완료 - 뽑으세요", "green")
    text = render_status_text(example_status(), width=80)
    assert "가짜 용량 - 따로 두세요" in text and "쓰기 방지 - 잠금 스위치를 푸세요" in text
    # a finished job's message is said from its error code, not from its English message
    assert "지워지지 않음: 작업이 끝나기 전에 뽑혔어요" in text
    assert "pulled while it waited" not in text
    i18n.use("en")
    assert "DONE - pull it" in render_status_text(example_status(), width=80)


def _from_cell(line: str, col: int) -> str | None:
    """What ``line`` shows from terminal cell ``col`` on; None when a wide character straddles
    it (the columns would not line up)."""
    used = 0
    for i, ch in enumerate(line):
        if used == col:
            return line[i:]
        if used > col:
            return None
        used += text_width(ch)
    return "" if used == col else None


def test_korean_status_lines_fit_and_line_up(korean: None) -> None:
    text = render_status_text(example_status(), width=80)
    lines = text.splitlines()
    assert all(text_width(line) <= 80 for line in lines)
    header = next(line for line in lines if line.startswith("포트"))
    state_col = text_width(header[: header.index("상태")])
    rows = [line for line in lines if line[:1].isdigit()]
    assert len(rows) == 8
    for line in rows:  # each port row's state starts exactly under STATE, after a blank
        rest = _from_cell(line, state_col)
        assert rest and rest[0] != " " and _from_cell(line, state_col - 1) == " " + rest, line
    assert "쓰기 방지 - 잠금 스위치를 푸세요" in text, "the longest words are not cut"


def test_no_daemon_says_so_in_korean(tmp_path: Path) -> None:
    """``LANGUAGE=ko fdffctl status`` with no daemon running prints the Korean message."""
    config = tmp_path / "fdffd.toml"
    config.write_text(f'[station]\ncontrol_socket = "{tmp_path / "none.sock"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    result = subprocess.run(
        [sys.executable, "-m", "fdffd.cli.ctl", "status", "--config", str(config)],
        env={**env, "LANGUAGE": "ko", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "fdffd가 실행 중이 아니에요" in result.stderr, result.stderr
    english = subprocess.run(
        [sys.executable, "-m", "fdffd.cli.ctl", "status", "--config", str(config)],
        env={**env, "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "fdffd is not running" in english.stderr, english.stderr


WATCH_SCRIPT = """\
import sys
from fdffd import i18n
from fdffd.station.status import example_status
from fdffd.station.watch import run_watch

i18n.use(i18n.choose())
rc = run_watch(example_status, interval=0.2)
with open(sys.argv[1], "w") as f:
    f.write(str(rc))
"""


def _tmux(socket: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10, check=False
    )


def test_the_korean_view_fits_an_80x24_terminal(tmp_path: Path, korean: None) -> None:
    """The curses view in Korean, in a real 80x24 terminal (tmux), with drives in every state:
    the screen is exactly the rendered lines (wide characters two cells each), so no phrase is
    cut and the columns line up."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux): no terminal to run curses in")
    script = tmp_path / "watch.py"
    script.write_text(WATCH_SCRIPT)
    rc_file = tmp_path / "rc"
    socket = f"fdffd-test-{os.getpid()}-ko"
    env = f"PYTHONPATH={REPO} TERM=xterm-256color LANG=C.UTF-8 LANGUAGE=ko"
    expected = [text.rstrip() for text, _ in render_watch_lines(example_status(), 80, 24)]
    for port in example_status()["ports"]:
        words = volunteer_words(port)[0]
        assert any(words in line for line in expected), f"{words!r} is cut"
    try:
        command = f"env {env} {sys.executable} {script} {rc_file}"
        started = _tmux(socket, "new-session", "-d", "-x", "80", "-y", "24", command)
        assert started.returncode == 0, started.stderr
        screen: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.2)
            pane = _tmux(socket, "capture-pane", "-p").stdout
            screen = [line.rstrip() for line in pane.split("\n")]
            if "완료 - 뽑으세요" in "\n".join(screen):
                break
        assert screen[:24] == expected, "\n".join(screen)
        for line in screen:
            assert text_width(line) <= 80
        _tmux(socket, "send-keys", "q")
        deadline = time.monotonic() + 10
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rc_file.read_text() == "0"
    finally:
        _tmux(socket, "kill-server")


def test_the_korean_volunteer_card_prints_every_phrase(korean: None) -> None:
    """docs/volunteer-card.ko.md names every Korean phrase of the screen (and its English one),
    so the card matches the screen in either language."""
    card = (REPO / "docs/volunteer-card.ko.md").read_text()
    for words, _ in WORDS.values():
        assert f"`{i18n._(words)}` (`{words}`)" in card, words
    assert i18n._(NOT_WIPED) in card and i18n._(UNREACHABLE) in card


@pytest.mark.parametrize("size", [(80, 24), (40, 12), (24, 6), (132, 43)])
@pytest.mark.parametrize("ports", [1, 8, 16])
def test_korean_watch_lines_fit_any_terminal(
    korean: None, size: tuple[int, int], ports: int
) -> None:
    width, height = size
    status = example_status()
    status["ports"] = (status["ports"] * 2)[:ports]
    lines = render_watch_lines(status, width, height)
    assert len(lines) <= height
    assert all(text_width(text) <= width for text, _ in lines)
    text = render_status_text(status, width=width)
    assert all(text_width(line) <= width for line in text.splitlines())
