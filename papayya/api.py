"""The published SDK's ``papayya.api`` (``papayya==0.2.0``), over this package's one HTTP client.

``APIClient`` has the published methods, names and return shapes (the server's JSON as is: a
dict, or a list for a list), and raises ``PapayyaAPIError`` with the HTTP status and the
answer's body, as published. It is synchronous, as published: each call runs
``papayya.apiclient.ApiClient`` (aiohttp) on an event loop of its own, in a thread that this
client owns, so it can be called from plain code and from inside a running event loop alike.

Deliberate differences (docs/compatibility.md): without ``base_url`` or ``PAPAYYA_BASE_URL``
the client talks to a local server (``http://127.0.0.1:8080``), not the hosted one; a list
follows the ``Link: rel="next"`` pages to the end; a delete that the server refuses raises.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from papayya.apiclient import ApiClient
from papayya.errors import InvalidInput, PapayyaAPIError, PapayyaError

__all__ = ["DEFAULT_BASE_URL", "APIClient", "APIConfig", "PapayyaAPIError", "resolve_config"]

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
MOST_LISTED = 100_000  # a list stops following its pages there
T = TypeVar("T")


@dataclass
class APIConfig:
    api_key: str
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 30.0


def resolve_config(api_key: str | None = None, base_url: str | None = None) -> APIConfig:
    """The key and URL passed, else ``PAPAYYA_API_KEY`` and ``PAPAYYA_BASE_URL``."""
    key = api_key or os.environ.get("PAPAYYA_API_KEY")
    if not key:
        raise PapayyaAPIError(401, "No API key. Set PAPAYYA_API_KEY or pass --api-key.")
    url = base_url or os.environ.get("PAPAYYA_BASE_URL") or DEFAULT_BASE_URL
    return APIConfig(api_key=key, base_url=url)


def _api_error(status: int, raw: bytes) -> Exception:
    return PapayyaAPIError(status, raw.decode(errors="replace"))


def _segment(value: str) -> str:
    """An id or name as one path segment (a ``/`` in it cannot reach another route)."""
    return quote(str(value), safe="")


class _Loop:
    """An event loop in a daemon thread, holding one ``ApiClient`` session."""

    def __init__(self, config: APIConfig) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = ApiClient(config.base_url, config.api_key, _api_error, config.timeout)
        self.run(self.client.__aenter__())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop.is_closed():
            coro.close()
            raise PapayyaError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        if self.loop.is_closed():
            return
        try:
            closing = self.client.__aexit__(None, None, None)
            asyncio.run_coroutine_threadsafe(closing, self.loop).result(timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            if not self.thread.is_alive():
                self.loop.close()


class APIClient:
    """Thin wrapper around the control plane REST API (the published methods)."""

    def __init__(self, config: APIConfig) -> None:
        if not config.base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"base_url must be an http(s) URL, not {config.base_url!r}")
        self._config = config
        self._start()

    def _start(self) -> None:
        self._loop_ = _Loop(self._config)
        # Closed when dropped or at exit if the caller never closes it, as httpx's would be.
        self._closing = weakref.finalize(self, self._loop_.close)

    @property
    def _loop(self) -> _Loop:
        """This process's loop: a child forked with the client (whose loop thread did not
        follow) starts its own instead of waiting for ever."""
        if self._loop_.pid != os.getpid():
            self._closing.detach()  # the parent's to close
            self._start()
        return self._loop_

    def close(self) -> None:
        if self._loop_.pid == os.getpid():
            self._closing()

    # -- the transport ---------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The answer's JSON; ``PapayyaAPIError`` for an error status (``PapayyaError`` if the
        server cannot be reached)."""
        return self._loop.run(self._loop.client.call(method, path, json, params))

    def _list(self, path: str, params: dict[str, Any] | None = None) -> list[Any]:
        """Every item of a list endpoint, following its pages."""
        return self._loop.run(self._loop.client.listing(path, params, most=MOST_LISTED))

    def _upload(self, path: str, fields: dict[str, str], name: str, data: bytes) -> Any:
        form = aiohttp.FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field("file", data, filename=name, content_type="application/gzip")
        return self._loop.run(self._loop.client.call("POST", path, form=form))

    def _stream(self, path: str, last_event_id: str | None) -> Iterator[dict[str, Any]]:
        """``{event, data, id?}`` for each server-sent event, as the published ``runs.stream``
        yields them, until the server ends the stream."""
        events: AsyncIterator[tuple[str, str | None, Any]] = self._loop.client.sse(
            path, last_event_id
        )

        async def following() -> tuple[str, str | None, Any] | None:
            return await anext(events, None)

        try:
            while (item := self._loop.run(following())) is not None:
                event, event_id, data = item
                out: dict[str, Any] = {"event": event, "data": data}
                if event_id is not None:
                    out["id"] = event_id
                yield out
        finally:
            if not self._loop.loop.is_closed():
                self._loop.run(events.aclose())  # type: ignore[attr-defined]

    # -- Auth ------------------------------------------------------------------------------

    def login(self, email: str, password: str) -> dict[str, Any]:
        body = {"email": email, "password": password}
        return self._request("POST", "/v1/auth/login", json=body)  # type: ignore[no-any-return]

    def register(self, email: str, password: str, name: str) -> dict[str, Any]:
        body = {"email": email, "password": password, "name": name}
        return self._request("POST", "/v1/auth/register", json=body)  # type: ignore[no-any-return]

    # -- Projects --------------------------------------------------------------------------

    def create_project(self, name: str, slug: str) -> dict[str, Any]:
        body = {"name": name, "slug": slug}
        return self._request("POST", "/v1/projects", json=body)  # type: ignore[no-any-return]

    def list_projects(self) -> list[dict[str, Any]]:
        return self._list("/v1/projects")

    # -- API keys --------------------------------------------------------------------------

    def create_api_key(self, project_id: str, name: str) -> dict[str, Any]:
        path = f"/v1/projects/{_segment(project_id)}/api-keys"
        return self._request("POST", path, json={"name": name})  # type: ignore[no-any-return]

    # -- Agents ----------------------------------------------------------------------------

    def deploy_agent(self, agent_def: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", "/v1/agents", json=agent_def)  # type: ignore[no-any-return]

    def create_agent(
        self, project_id: str, name: str, slug: str, config: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"project_id": project_id, "name": name, "slug": slug}
        if config:
            body["config"] = config
        return self._request("POST", "/v1/agents", json=body)  # type: ignore[no-any-return]

    def list_agents(self, project_id: str | None = None) -> list[dict[str, Any]]:
        return self._list("/v1/agents", {"project_id": project_id} if project_id else None)

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/agents/{_segment(agent_id)}")  # type: ignore[no-any-return]

    # -- Runs ------------------------------------------------------------------------------

    def trigger_run(
        self,
        agent_id: str,
        *,
        model: str,
        system_prompt: str,
        input_data: Any,
        max_steps: int = 50,
        budget_cents: int = 500,
    ) -> dict[str, Any]:
        body = {
            "agent_id": agent_id,
            "model": model,
            "system_prompt": system_prompt,
            "input": input_data,
            "max_steps": max_steps,
            "budget_cents": budget_cents,
        }
        return self._request("POST", "/v1/runs", json=body)  # type: ignore[no-any-return]

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/runs/{_segment(run_id)}")  # type: ignore[no-any-return]

    def get_steps(self, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/v1/runs/{_segment(run_id)}/steps")  # type: ignore[no-any-return]

    def cancel_run(self, run_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/runs/{_segment(run_id)}/cancel")  # type: ignore[no-any-return]

    # -- Tool calls (the hosted worker bridge; not served here: 404 route_not_supported) ----

    def poll_tool_calls(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/tool-calls/pending")  # type: ignore[no-any-return]

    def resolve_tool_call(self, tool_call_id: str, output: Any) -> dict[str, Any]:
        import json

        text = output if isinstance(output, str) else json.dumps(output, default=str)
        path = f"/v1/tool-calls/{_segment(tool_call_id)}/result"
        return self._request("POST", path, json={"output": text})  # type: ignore[no-any-return]

    # -- Deployments -----------------------------------------------------------------------

    def upload_deployment(
        self,
        agent_id: str,
        tarball: bytes,
        runtime: str = "python",
        entrypoint: str = "agent.py",
    ) -> dict[str, Any]:
        """Upload a deployment artifact (multipart)."""
        fields = {"runtime": runtime, "entrypoint": entrypoint}
        path = f"/v1/agents/{_segment(agent_id)}/deploy"
        return self._upload(path, fields, "artifact.tar.gz", tarball)  # type: ignore[no-any-return]

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        path = f"/v1/deployments/{_segment(deployment_id)}"
        return self._request("GET", path)  # type: ignore[no-any-return]

    def list_deployments(self, agent_id: str) -> list[dict[str, Any]]:
        return self._list(f"/v1/agents/{_segment(agent_id)}/deployments")

    # -- Secrets ---------------------------------------------------------------------------

    def set_secret(self, project_id: str, name: str, value: str) -> dict[str, Any]:
        path = f"/v1/projects/{_segment(project_id)}/secrets"
        return self._request("POST", path, json={"name": name, "value": value})  # type: ignore[no-any-return]

    def list_secrets(self, project_id: str) -> list[dict[str, Any]]:
        return self._list(f"/v1/projects/{_segment(project_id)}/secrets")

    def delete_secret(self, project_id: str, name: str) -> None:
        self._request("DELETE", f"/v1/projects/{_segment(project_id)}/secrets/{_segment(name)}")

    # -- Schedules -------------------------------------------------------------------------

    def list_schedules(self, agent_id: str) -> list[dict[str, Any]]:
        return self._list(f"/v1/agents/{_segment(agent_id)}/schedules")

    def create_schedule(
        self, agent_id: str, cron_expression: str, timezone: str = "UTC"
    ) -> dict[str, Any]:
        body = {"cron_expression": cron_expression, "timezone": timezone}
        path = f"/v1/agents/{_segment(agent_id)}/schedules"
        return self._request("POST", path, json=body)  # type: ignore[no-any-return]

    def delete_schedule(self, schedule_id: str) -> None:
        self._request("DELETE", f"/v1/schedules/{_segment(schedule_id)}")

    # -- Webhooks --------------------------------------------------------------------------

    def list_webhooks(self, agent_id: str) -> list[dict[str, Any]]:
        return self._list(f"/v1/agents/{_segment(agent_id)}/webhooks")

    def create_webhook(self, agent_id: str, name: str) -> dict[str, Any]:
        """Create a webhook. Its ``secret`` and ``trigger_url`` are only shown here."""
        path = f"/v1/agents/{_segment(agent_id)}/webhooks"
        return self._request("POST", path, json={"name": name})  # type: ignore[no-any-return]

    def delete_webhook(self, webhook_id: str) -> None:
        self._request("DELETE", f"/v1/webhooks/{_segment(webhook_id)}")

    # -- Rate card -------------------------------------------------------------------------

    def get_rate_card(self, project_id: str) -> dict[str, Any]:
        """The project's per-model rate card; ``{}`` if unset."""
        path = f"/v1/projects/{_segment(project_id)}/rate-card"
        return self._request("GET", path)  # type: ignore[no-any-return]

    def set_rate_card(self, project_id: str, rate_card: dict[str, Any]) -> dict[str, Any]:
        """Replace the project's rate card wholesale."""
        path = f"/v1/projects/{_segment(project_id)}/rate-card"
        return self._request("PUT", path, json=rate_card)  # type: ignore[no-any-return]
