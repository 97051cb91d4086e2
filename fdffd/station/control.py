"""The control socket: a UNIX stream socket, root only, one JSON request and one JSON answer.

Requests are one line of JSON, ``{"cmd": "status"}``; answers are one line of JSON: the
status (``station/status.py``) or ``{"error": "..."}``.  Peers that are not root are refused
(``SO_PEERCRED``), and the socket file is mode 0600.  Bad requests get a specific error,
never a traceback; a request larger than 64 KiB or slower than 5 s is dropped.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..log import get_logger

MAX_REQUEST = 64 << 10
TIMEOUT = 5.0
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def parse_request(raw: bytes) -> dict[str, Any]:
    """A request, or ValueError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("request is not UTF-8") from None
    try:
        req = json.loads(text)
    except ValueError as err:
        raise ValueError(f"request is not JSON: {err}") from None
    if not isinstance(req, dict):
        raise ValueError('request must be a JSON object such as {"cmd": "status"}')
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        raise ValueError('request needs a "cmd" string')
    return req


class ControlServer:
    """Serves ``handler`` on ``path`` in a background thread until ``close()``."""

    def __init__(self, path: Path, handler: Handler, *, allow_uid: int = 0) -> None:
        self.path = path
        self.handler = handler
        self.allow_uid = allow_uid
        self.log = get_logger(component="control")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.is_socket():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="fdffd-control", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                uid = peer_uid(conn)
                if uid != self.allow_uid:
                    self.log.warning("control.refused", uid=uid)
                    self._send(conn, {"error": "permission denied: the control socket is for root"})
                    return
                raw = self._read(conn)
                try:
                    req = parse_request(raw)
                except ValueError as err:
                    self._send(conn, {"error": str(err)})
                    return
                try:
                    answer = self.handler(req)
                except UsageError as err:
                    answer = {"error": err.message}
                self._send(conn, answer)
            except (OSError, ValueError) as err:
                self.log.info("control.dropped", error=str(err))
            except Exception:
                self.log.exception("control.crashed")

    @staticmethod
    def _read(conn: socket.socket) -> bytes:
        buf = b""
        while b"\n" not in buf:
            part = conn.recv(4096)
            if not part:
                break
            buf += part
            if len(buf) > MAX_REQUEST:
                raise ValueError("request too large")
        return buf.split(b"\n", 1)[0]

    @staticmethod
    def _send(conn: socket.socket, obj: dict[str, Any]) -> None:
        conn.sendall(json.dumps(obj, ensure_ascii=False).encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(timeout=2)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def request(path: Path, req: dict[str, Any], *, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon and return its answer; UsageError when it is not running."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise UsageError(f"fdffd is not running (no control socket at {path})") from None
        except PermissionError:
            raise UsageError(f"permission denied on {path}: run as root") from None
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            part = s.recv(65536)
            if not part:
                break
            buf += part
    if not buf:
        raise UsageError(f"fdffd closed the control socket without answering ({path})")
    answer = json.loads(buf)
    if not isinstance(answer, dict):
        raise UsageError("fdffd answered something that is not a JSON object")
    if "error" in answer:
        raise UsageError(f"fdffd: {answer['error']}")
    return answer
