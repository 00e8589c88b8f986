"""The runtime API seen from inside the agent's process: JSON over HTTP with the run token.

Standard library only (urllib), like the rest of ``papayya.runtime``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_SECONDS = 30.0


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
