"""The README's first command works: a live station processes its drives and ends on its own,
and leaves nothing behind, also when udev's events never reach it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fdffd_testkit.loopdev import backing_file_of


def _demo(*args: str, netns: bool = False, timeout: float = 300) -> tuple[int, int, str, str]:
    """``fdffctl demo ARGS`` as a process of its own (in a network namespace of its own with
    ``netns``: ``unshare`` execs it, so the pid stays the demo's); (pid, exit, out, err)."""
    cmd = [sys.executable, "-m", "fdffd.cli.ctl", "demo", *args]
    if netns:
        cmd = ["unshare", "--net", *cmd]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the demo did not end in {timeout:g} s:\n{out}\n{err}") from exc
    return proc.pid, proc.returncode, out, err


def _left_behind(pid: int) -> list[str]:
    """What a demo run as ``pid`` left: its directories (everything it makes is named
    ``fdffd-demo-PID-``), loop devices over its files, FUSE mounts, processes."""
    tag = f"fdffd-demo-{pid}-"
    found = [str(p) for d in ("/var/tmp", "/dev/shm") for p in Path(d).glob(f"{tag}*")]
    for entry in Path("/sys/block").glob("loop*"):
        backing = backing_file_of(entry.name)
        if backing and tag in backing:
            found.append(f"/dev/{entry.name} over {backing}")
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if tag in line.split()[4]]
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if tag in cmdline:
            found.append(f"process {proc.name}: {cmdline}")
    return found


def test_demo_runs_to_the_end() -> None:
    """fdffctl demo: each simulated drive gets its verdict, the audit log verifies, exit 0,
    and every device, mount, process and directory it made is gone afterwards."""
    pid, code, out, err = _demo()
    assert code == 0, out + err
    for verdict in ("OK", "COUNTERFEIT", "REFUSED"):  # the report's column (its width varies)
        assert re.search(rf"^/dev/\S+ +{verdict} ", out, re.M), out
    assert "payload verified" in out
    assert "DONE - pull it" in out and "WRITE-PROTECTED - flip the switch" in out  # the live view
    assert "audit log:" in out and ": OK, 6 lines verified" in out
    assert _left_behind(pid) == []


def test_demo_stops_when_no_udev_event_arrives() -> None:
    """In a network namespace of its own the demo still reaches the machine's udevd (its
    control socket is a file: ``udevadm control --ping`` answers), but udevd's events are
    multicast in the host's namespace only: the first drive never reaches the station.  The
    demo says so, ends on its own and removes what it made."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for a network namespace")
    pid, code, out, err = _demo("--event-timeout", "5", netns=True, timeout=120)
    assert code == 5, out + err
    assert "no udev event for /dev/loop" in err and "within 5 s of plugging it in" in err, err
    assert "answers on /run/udev/control, but its events do not reach this process" in err
    assert _left_behind(pid) == []
