"""The test kit asks udevd itself whether it serves this root (``udevadm control --ping``).

The machine's udevd is never stopped here: the cases without one run in a private mount
namespace with a tmpfs over ``/run/udev``, where this root's control socket is missing, or is
bound by a process that never answers (a stopped or hung udevd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from fdffd_testkit.udevd import udevd_answers, udevd_identity


def _in_private_run_udev(body: str) -> str:
    """Run Python ``body`` in a private mount namespace whose /run/udev is an empty tmpfs;
    its stdout."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (util-linux) for a private mount namespace")
    if not os.path.isdir("/run/udev"):
        pytest.skip("needs /run/udev (a root where udev runs) to cover it with a tmpfs")
    script = "import subprocess\n" + (
        "subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', '/run/udev'], check=True)\n"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script + body],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_the_udevd_serving_this_root_answers(udevd: None) -> None:
    assert udevd_answers()
    ident = udevd_identity()
    assert ident is not None and ident == udevd_identity()  # the same udevd, asked twice


def test_no_control_socket_means_no_udevd() -> None:
    """A udevd process may run (the machine's does), but none serves a root whose
    /run/udev/control is missing: the ping says so, whatever the process list shows."""
    out = _in_private_run_udev(
        "from fdffd_testkit.udevd import udevd_answers, udevd_identity\n"
        "print(udevd_answers(), udevd_identity())\n"
    )
    assert out == "False None"


def test_a_control_socket_nobody_answers_on_means_no_udevd() -> None:
    """A socket file left behind by a udevd that hangs or is stopped: connecting works (the
    kernel queues it), no answer comes; the ping gives up after its timeout."""
    out = _in_private_run_udev(
        textwrap.dedent(
            """
            import socket, time
            from fdffd_testkit.udevd import udevd_answers
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.bind("/run/udev/control")
            s.listen(8)
            t0 = time.monotonic()
            print(udevd_answers(timeout=1), round(time.monotonic() - t0))
            """
        )
    )
    answered, seconds = out.split()
    assert answered == "False" and int(seconds) <= 3, out
