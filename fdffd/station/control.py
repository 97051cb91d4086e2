"""The control socket: a UNIX stream socket, root only, one JSON request and one JSON answer.

Requests are one line of JSON, ``{"cmd": "status"}``; answers are one line of JSON: the
status (``station/status.py``) or ``{"error": "..."}``.  Peers that are not root are refused
(``SO_PEERCRED``), and the socket file is mode 0600.  Bad requests get a specific error,
never a traceback: a request larger than 64 KiB, or not complete within 5 s, is answered
with an error saying so and the connection is closed; so is a client beyond the 32 served
at once.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..i18n import _
from ..log import get_logger

MAX_REQUEST = 64 << 10
TIMEOUT = 5.0
#: connections served at once; more are answered "busy" at once
MAX_CLIENTS = 32
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
    except RecursionError:
        raise ValueError("request is not a usable JSON object: nested too deeply") from None
    if not isinstance(req, dict):
        raise ValueError('request must be a JSON object such as {"cmd": "status"}')
    cmd = req.get("cmd")
    if not isinstance(cmd, str):
        raise ValueError('request needs a "cmd" string, as in {"cmd": "status"}')
    return req


class _RequestTooLarge(Exception):
    pass


class ControlServer:
    """Serves ``handler`` on ``path`` in a background thread until ``close()``."""

    def __init__(
        self, path: Path, handler: Handler, *, allow_uid: int = 0, timeout: float = TIMEOUT
    ) -> None:
        self.path = path
        self.handler = handler
        self.allow_uid = allow_uid
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
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
            if not self._slots.acquire(blocking=False):
                self._busy(conn)
                continue
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()

    def _busy(self, conn: socket.socket) -> None:
        with conn:
            self.log.warning("control.busy", limit=MAX_CLIENTS)
            try:
                conn.settimeout(0.5)
                self._send(conn, {"error": f"busy: {MAX_CLIENTS} clients already connected"})
            except OSError:
                pass

    def _serve_one(self, conn: socket.socket) -> None:
        try:
            self._one(conn)
        finally:
            self._slots.release()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.timeout)
            try:
                uid = peer_uid(conn)
                if uid != self.allow_uid:
                    self.log.warning("control.refused", uid=uid)
                    self._send(conn, {"error": "permission denied: the control socket is for root"})
                    return
                try:
                    raw = self._read(conn, time.monotonic() + self.timeout)
                except _RequestTooLarge:
                    self.log.info("control.dropped", error="request too large")
                    self._send(
                        conn,
                        {"error": f"request too large: more than {MAX_REQUEST} bytes in one line"},
                    )
                    return
                except TimeoutError:
                    self.log.info("control.dropped", error="request timed out")
                    self._send(
                        conn,
                        {
                            "error": f"request timed out: no complete line within "
                            f"{self.timeout:g} s; send one JSON line, then read the answer"
                        },
                    )
                    return
                try:
                    req = parse_request(raw)
                except ValueError as err:
                    self._send(conn, {"error": str(err)})
                    return
                try:
                    answer = self.handler(req)
                except UsageError as err:
                    answer = {"error": err.message}
                except Exception as err:
                    self.log.exception("control.handler_failed", cmd=str(req.get("cmd"))[:64])
                    answer = {
                        "error": f"internal error ({type(err).__name__}) while answering; "
                        "see the daemon's log"
                    }
                self._send(conn, answer)
            except OSError as err:  # the client went away, or stopped reading
                self.log.info("control.dropped", error=str(err))
            except Exception:
                self.log.exception("control.crashed")

    @staticmethod
    def _read(conn: socket.socket, deadline: float) -> bytes:
        """One request line, within ``deadline`` overall (a slow drip is no way around it)."""
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            conn.settimeout(left)
            part = conn.recv(4096)
            if not part:
                break
            buf += part
            if len(buf.split(b"\n", 1)[0]) > MAX_REQUEST:
                raise _RequestTooLarge
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
            raise UsageError(
                _("fdffd is not running (no control socket at {path})").format(path=path)
            ) from None
        except PermissionError:
            denied = _("permission denied on {path}: run as root")
            raise UsageError(denied.format(path=path)) from None
        except OSError as err:
            raise UsageError(f"cannot reach the control socket {path}: {err.strerror}") from None
        buf = b""
        try:
            try:
                s.sendall(json.dumps(req).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # answered without reading the request (a refusal): read that answer
            while not buf.endswith(b"\n"):
                part = s.recv(65536)
                if not part:
                    break
                buf += part
        except TimeoutError:
            raise UsageError(
                _("fdffd did not answer within {seconds:g} s ({path})").format(
                    seconds=timeout, path=path
                )
            ) from None
        except OSError as err:
            raise UsageError(f"the control socket {path} failed: {err.strerror}") from None
    if not buf:
        raise UsageError(f"fdffd closed the control socket without answering ({path})")
    try:
        answer = json.loads(buf)
    except (ValueError, RecursionError):
        raise UsageError(
            f"{path} answered something that is not JSON: is it fdffd's control socket?"
        ) from None
    if not isinstance(answer, dict):
        raise UsageError("fdffd answered something that is not a JSON object")
    if "error" in answer:
        raise UsageError(f"fdffd: {answer['error']}")
    return answer
