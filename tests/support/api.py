"""The control plane on a real port, as the HTTP tests drive it: a running API, and the
projects, agents and schedules a test creates through it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils, web


class Api:
    """A running control plane on a real port, with the default project's key."""

    def __init__(self, url: str, key: str, app: Any) -> None:
        self.url = url
        self.key = key
        self.app = app

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-Api-Key": key or self.key}


# What the ``api_client`` fixture (pytest-aiohttp's ``aiohttp_client`` on ``control_plane``) is.
ApiClient = test_utils.TestClient[web.Request, web.Application]


def control_plane(dsn: str, projectors: bool = False, scheduler: bool = False) -> web.Application:
    """The API's app on ``dsn``, not yet started; its bootstrap key comes from the environment.

    Tests drive the projectors (catch_up) and the cron scheduler (tick, with a clock of their
    own) themselves unless they ask for live ones."""
    from papayya.config import Config
    from server.app import init_app

    config = Config(database_url=dsn, run_projectors=projectors, run_scheduler=scheduler)
    return init_app(config, dsn)


@asynccontextmanager
async def running_api(
    dsn: str, monkeypatch: pytest.MonkeyPatch, projectors: bool = False, scheduler: bool = False
) -> AsyncIterator[Api]:
    """The control plane on a free loopback port, configured from the environment."""
    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    app = control_plane(dsn, projectors, scheduler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Api(f"http://127.0.0.1:{port}", key, app)
    finally:
        await runner.cleanup()


AGENT_CONFIG = {
    "model": "gpt-4o-mini",
    "instructions": "Be brief.",
    "max_steps": 7,
    "budget_usd": "0.50",
    "tools": ["search", {"type": "function", "function": {"name": "lookup"}}],
}


async def new_project(api: Api, http: Any, name: str = "team-b") -> tuple[str, str]:
    """A second project: its id and its key."""
    async with http.post(
        f"{api.url}/v1/projects", json={"name": name}, headers=api.headers()
    ) as resp:
        assert resp.status == 201
        created = await resp.json()
    return created["id"], created["api_key"]["key"]


async def create_agent(
    api: Api, http: Any, slug: str, key: str | None = None, **config: Any
) -> dict[str, Any]:
    body = {"name": f"Agent {slug}", "slug": slug, "config": {**AGENT_CONFIG, **config}}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=api.headers(key)) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def default_project(api: Api, http: aiohttp.ClientSession) -> str:
    async with http.get(f"{api.url}/v1/projects", headers=api.headers()) as resp:
        project: str = (await resp.json())[0]["id"]
        return project


async def other_project(api: Api, http: aiohttp.ClientSession, name: str) -> tuple[str, str]:
    """A second project: its id and its key."""
    async with http.post(
        f"{api.url}/v1/projects", json={"name": name}, headers=api.headers()
    ) as resp:
        created = await resp.json()
        return created["id"], created["api_key"]["key"]


SCHEDULE = {"cron_expression": "0 9 * * 1-5", "timezone": "Europe/Paris"}


async def create_schedule(
    api: Api, http: Any, agent: str, key: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {**SCHEDULE, **fields}
    async with http.post(
        f"{api.url}/v1/agents/{agent}/schedules", json=body, headers=api.headers(key)
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def call(
    api: Api, http: Any, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    async with http.request(method, api.url + path, json=body, headers=api.headers(key)) as resp:
        return resp.status, await resp.json()


async def page(
    api: Api, http: Any, path: str, key: str | None = None, **params: Any
) -> tuple[list[Any], str | None]:
    """One page of a list: its items (the body, a bare array) and the next page's cursor (the
    ``X-Next-Cursor`` header, which the ``Link: <…>; rel="next"`` header must agree with)."""
    async with http.get(api.url + path, params=params, headers=api.headers(key)) as resp:
        assert resp.status == 200, await resp.text()
        items = await resp.json()
        assert isinstance(items, list), items
        cursor = resp.headers.get("X-Next-Cursor")
        link = resp.links.get("next")
        assert (link is None) == (cursor is None), resp.headers
        if link is not None:
            assert resp.url.join(link["url"]).query["cursor"] == cursor
        return items, cursor
