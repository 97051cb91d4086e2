"""The control socket: root only, and every request gets an answer or a specific error."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdffd.errors import UsageError
from fdffd.station.control import ControlServer, parse_request, request


def _handler(req: dict[str, Any]) -> dict[str, Any]:
    if req["cmd"] == "status":
        return {"station": "t", "ports": []}
    raise UsageError(f"unknown command {req['cmd']!r}")


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = ControlServer(tmp_path / "run" / "control.sock", _handler)
    yield srv
    srv.close()


def _raw(path: Path, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while part := s.recv(65536):
            buf += part
    return dict(json.loads(buf))


def test_status_round_trip_and_socket_mode(server: ControlServer) -> None:
    """A status request is answered; the socket file is mode 0600."""
    assert request(server.path, {"cmd": "status"})["station"] == "t"
    assert (os.stat(server.path).st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"\xff\xfe\n", "not UTF-8"),
        (b"{nope\n", "not JSON"),
        (b"[1, 2]\n", "JSON object"),
        (b'{"command": "status"}\n', '"cmd" string'),
        (b'{"cmd": "format-everything"}\n', "unknown command"),
    ],
)
def test_bad_requests_get_a_specific_error(
    server: ControlServer, payload: bytes, needle: str
) -> None:
    """Each malformed request is answered with an error that says what is wrong."""
    assert needle in _raw(server.path, payload)["error"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_answered_or_dropped_never_crash(data: bytes) -> None:
    """Random bytes never crash the parser: a request or a ValueError naming the problem."""
    try:
        req = parse_request(data)
    except ValueError as err:
        assert str(err)
    else:
        assert isinstance(req["cmd"], str)


def test_server_survives_garbage_and_keeps_answering(server: ControlServer) -> None:
    """After garbage, an oversized request and a silent client, status still works."""
    _raw(server.path, b"\x00" * 100 + b"\n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(server.path))
        s.sendall(b"x" * (100 << 10))  # larger than any request may be: dropped
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(server.path))  # says nothing; the server times it out on its own thread
        assert request(server.path, {"cmd": "status"})["station"] == "t"


def test_non_root_peer_is_refused() -> None:
    """A process that is not root is refused even if it can reach the socket."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    run_dir = Path(tempfile.mkdtemp(prefix="fdffd-control-"))
    srv = ControlServer(run_dir / "control.sock", _handler)
    try:
        # pretend someone loosened the modes: SO_PEERCRED still refuses the peer
        os.chmod(run_dir, 0o755)
        os.chmod(srv.path, 0o666)
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: become nobody, ask for the status, report the answer
            try:
                os.close(rfd)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(str(srv.path))
                    try:
                        s.sendall(b'{"cmd": "status"}\n')
                    except BrokenPipeError:
                        pass  # refused before it read the request: the refusal is waiting
                    os.write(wfd, s.recv(65536))
            except BaseException as err:  # anything at all goes back to the parent
                os.write(wfd, json.dumps({"child": repr(err)}).encode())
            finally:
                os._exit(0)
        os.close(wfd)
        answer = b""
        while chunk := os.read(rfd, 65536):
            answer += chunk
        os.close(rfd)
        os.waitpid(pid, 0)
        assert "permission denied" in json.loads(answer)["error"], answer
    finally:
        srv.close()
        shutil.rmtree(run_dir, ignore_errors=True)
