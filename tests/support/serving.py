"""Helpers of the security tests: the control plane with a configuration of the test's own,
and a receiver for callbacks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from papayya.config import Config
from tests.support.api import Api


@asynccontextmanager
async def serving(
    dsn: str, monkeypatch: pytest.MonkeyPatch, host: str = "127.0.0.1", **config: Any
) -> AsyncIterator[Api]:
    """``tests.support.api.running_api`` with ``Config`` fields of the caller's choosing."""
    from web.app import init_app

    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    config = {"run_projectors": False, "run_scheduler": False} | config
    app = init_app(Config(database_url=dsn, **config), dsn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Api(f"http://{host}:{port}", key, app)
    finally:
        await runner.cleanup()


@dataclass
class Receiver:
    """An HTTP endpoint on loopback that records what it is sent."""

    url: str = ""
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@asynccontextmanager
async def receiver(answer: Any = None) -> AsyncIterator[Receiver]:
    """Records every request; ``answer(request)`` makes the response (204 by default)."""
    got = Receiver()

    async def receive(request: web.Request) -> web.StreamResponse:
        got.received.append((request.path, dict(request.headers), await request.read()))
        if answer is not None:
            return await answer(request)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    got.url = f"http://127.0.0.1:{port}"
    try:
        yield got
    finally:
        await runner.cleanup()


async def call(
    http: aiohttp.ClientSession,
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    key: str | None = None,
) -> tuple[int, Any]:
    async with http.request(method, api.url + path, json=body, headers=api.headers(key)) as r:
        return r.status, await r.json(content_type=None)
