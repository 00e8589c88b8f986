"""The runtime API seen from inside the agent's process: JSON over HTTP with the run token.

Standard library only (http.client), like the rest of ``papayya.runtime``.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
import uuid
from typing import Any

TIMEOUT_SECONDS = 30.0
RETRY_SECONDS = 60.0


class RuntimeApiError(Exception):
    """The control plane refused a runtime API call."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"runtime API answered {status}: {body[:500]}")
        self.status = status


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the control plane's Unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RuntimeClient:
    """One keep-alive connection per thread (the agent's and the heartbeat's).

    Given the control plane's Unix socket (``unix_socket``), the calls go straight to it; the
    loopback port that ``forward`` opens on the same socket is for the agent's own SDKs. Each
    call through that port would cost two thread hand-offs and two more copies in this
    process, and a noop run makes five calls."""

    def __init__(self, base_url: str, token: str, unix_socket: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        parts = urllib.parse.urlsplit(self.base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/") + "/v1/runtime/"
        self._unix_socket = unix_socket
        self._local = threading.local()

    def close(self) -> None:
        """Close the calling thread's connection."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One call, retried while the control plane is unreachable or answers 5xx (a
        restart of it or of its database), for up to ``RETRY_SECONDS``. Every try carries the
        same ``Idempotency-Key``: a try whose answer was lost may have been recorded, and the
        control plane then records its retry no second time."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.1
        key = uuid.uuid4().hex if method == "POST" else None
        while True:
            try:
                return self._once(method, path, body, key)
            except RuntimeApiError as exc:
                if exc.status < 500 or time.monotonic() > deadline:
                    raise
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _once(self, method: str, path: str, body: dict[str, Any] | None, key: str | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._unix_socket:
                conn = UnixHTTPConnection(self._unix_socket, TIMEOUT_SECONDS)
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT_SECONDS)
            self._local.conn = conn
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()  # a fresh connection next time
            self._local.conn = None
            raise OSError(f"runtime API unreachable: {exc}") from exc
        if response.status >= 400:
            raise RuntimeApiError(response.status, raw.decode(errors="replace"))
        return json.loads(raw or b"null")
