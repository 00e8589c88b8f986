"""``init_app(config, dsn)``: the aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from web import keys
from web.middleware import error_middleware


async def _event_store(app: web.Application) -> AsyncIterator[None]:
    await migrate(app[keys.DSN])
    store = await PostgresEventStore.connect(app[keys.DSN])
    app[keys.STORE] = store
    yield
    await store.close()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    store = request.app[keys.STORE]
    await store.pool.fetchval("SELECT 1")
    return web.json_response({"status": "ready"})


def init_app(config: Config, dsn: str) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=1024 * 1024)
    app[keys.CONFIG] = config
    app[keys.DSN] = dsn
    app.cleanup_ctx.append(_event_store)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
