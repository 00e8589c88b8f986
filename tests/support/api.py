"""The control plane on a real port, as the HTTP tests drive it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest


class Api:
    """A running control plane on a real port, with the default project's key."""

    def __init__(self, url: str, key: str, app: Any) -> None:
        self.url = url
        self.key = key
        self.app = app

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-Api-Key": key or self.key}


@asynccontextmanager
async def running_api(
    dsn: str, monkeypatch: pytest.MonkeyPatch, projectors: bool = False, scheduler: bool = False
) -> AsyncIterator[Api]:
    """The control plane on a free loopback port, configured from the environment."""
    from aiohttp import web

    from papayya.config import Config
    from web.app import init_app

    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    # Tests drive the projectors (catch_up) and the cron scheduler (tick, with a clock of
    # their own) themselves unless they ask for live ones.
    config = Config(database_url=dsn, run_projectors=projectors, run_scheduler=scheduler)
    app = init_app(config, dsn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Api(f"http://127.0.0.1:{port}", key, app)
    finally:
        await runner.cleanup()
