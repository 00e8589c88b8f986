"""The runtime API seen from inside the agent's process: JSON over HTTP with the run token.

Standard library only (urllib), like the rest of ``papayya.runtime``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_SECONDS = 30.0
RETRY_SECONDS = 60.0


class RuntimeApiError(Exception):
    """The control plane refused a runtime API call."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"runtime API answered {status}: {body[:500]}")
        self.status = status


class RuntimeClient:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One call, retried while the control plane is unreachable or answers 5xx (a
        restart of it or of its database), for up to ``RETRY_SECONDS``."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                return self._once(method, path, body)
            except RuntimeApiError as exc:
                if exc.status < 500 or time.monotonic() > deadline:
                    raise
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _once(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/v1/runtime/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeApiError(exc.code, exc.read().decode(errors="replace")) from None
