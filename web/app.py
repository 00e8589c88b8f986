"""``init_app(config, dsn)``: the aiohttp application factory."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.errors import ProjectionFailing
from papayya.runstates import RunStates
from projections.service import Projections
from projections.service import failing as projection_failures
from web import http, keys, tenancy
from web.auth import auth_middleware
from web.gateway import gateway_ctx
from web.metrics import collector as metrics_collector
from web.middleware import error_middleware
from web.openapi import api
from web.ratelimit import AuthLimiter
from web.revocation import key_watch_ctx
from web.routes import (  # noqa: F401  (importing a route module registers its routes)
    agents,
    callbacks,
    cost,
    dashboard,
    deploy,
    deployments,
    durable,
    events,
    login,
    metrics,
    overview,
    projects,
    run_detail,
    runs,
    runtime,
    schedules,
    usage,
    webhooks,
)
from web.sse import close_all as close_event_streams
from web.sse import sse_ctx

log = logging.getLogger(__name__)


async def _event_store(app: web.Application) -> AsyncIterator[None]:
    bootstrap_key = os.environ.get(tenancy.BOOTSTRAP_ENV) or None
    tenancy.check_bootstrap_key(bootstrap_key)  # before anything is written
    await migrate(app[keys.DSN])
    store = await PostgresEventStore.connect(app[keys.DSN])
    app[keys.STORE] = store
    app[keys.RUNS] = RunStates(store)
    try:
        created = await tenancy.bootstrap(store.pool, bootstrap_key)
    except BaseException:
        await store.close()
        raise
    if created is not None and not bootstrap_key:
        # Shown once: only its hash is stored.
        print(f"Created project 'default'. API key (shown once): {created.key}", flush=True)
    yield
    await store.close()


@api.route("GET", "/healthz", "Liveness", auth="none", tag="ops")
async def healthz(request: web.Request) -> web.Response:
    return http.json({"status": "ok"})


@api.route(
    "GET", "/readyz", "Readiness: the database answers and no projector is stuck on an event "
    "(503 naming it otherwise)", auth="none", tag="ops",
)  # fmt: skip
async def readyz(request: web.Request) -> web.Response:
    failures = await projection_failures(request.app[keys.STORE].pool)
    if failures:
        # Unauthenticated: the projector and the event, not the error (it may quote data).
        said = "; ".join(f.describe(why=False) for f in failures)
        raise ProjectionFailing(f"{said} (papayya projections status says why)")
    return http.json({"status": "ready"})


@api.route("GET", "/openapi.json", "This API's OpenAPI 3.1 description", auth="none", tag="ops")
async def openapi(request: web.Request) -> web.Response:
    return http.json(api.spec())


async def _projectors(app: web.Application) -> AsyncIterator[None]:
    """The read models (runs list, usage, dashboard) kept up to date in this process; with
    several servers one leader per projector is elected and the others stand by."""
    if not app[keys.CONFIG].run_projectors:
        yield
        return
    projections = Projections(app[keys.STORE], app[keys.DSN], poll_interval=0.5)
    task = asyncio.create_task(projections.run(), name="projectors")
    yield
    projections.stop()
    try:
        await asyncio.wait_for(task, 10)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()


async def _cloud(app: web.Application) -> AsyncIterator[None]:
    """The dispatcher, sweeper, callbacks and a worker in this process, as configured (they
    need Redis: ``papayya server`` starts an embedded one when none is configured)."""
    config = app[keys.CONFIG]
    if not config.redis_url or not (config.run_dispatcher or config.run_worker):
        yield
        return
    from workers.services import background
    from workers.worker import WorkerConfig

    worker_config = None
    if config.run_worker:
        # The API stops listening before this exits, so agents could not report during a
        # drain: hand running attempts back to the queue at once (they resume next time).
        worker_config = WorkerConfig.from_env(
            control_url=config.control_url or f"http://127.0.0.1:{config.port}",
            control_socket=config.runtime_socket,
            concurrency=config.worker_concurrency,
            drain_seconds=0.0,
        )
    async with background(
        app[keys.STORE], app[keys.DSN], config, config.redis_url,
        scheduler=config.run_dispatcher, worker=config.run_worker, worker_config=worker_config,
    ):  # fmt: skip
        yield


def init_app(config: Config, dsn: str) -> web.Application:
    metrics.check_config(config.metrics_token, config.metrics_listen)  # before anything starts
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=http.MAX_BODY_BYTES
    )
    app[keys.CONFIG] = config
    app[keys.DSN] = dsn
    app[keys.AUTH_LIMITER] = AuthLimiter(
        config.auth_failure_limit, config.auth_failure_window_seconds
    )
    app.cleanup_ctx.append(_event_store)
    app.cleanup_ctx.append(sse_ctx)  # needs the store and its run states
    app.cleanup_ctx.append(key_watch_ctx)  # revoked keys end their streams
    app.cleanup_ctx.append(gateway_ctx)
    app.cleanup_ctx.append(_projectors)
    app.cleanup_ctx.append(_cloud)
    app.cleanup_ctx.append(schedules.scheduler_ctx)  # Config.run_scheduler
    app.cleanup_ctx.append(deploy.builds_ctx)  # image builds; Config.run_builder
    app.cleanup_ctx.append(metrics_collector)  # needs the store: after _event_store
    app.cleanup_ctx.append(metrics.listener_ctx)  # PAPAYYA_METRICS_LISTEN
    app.on_shutdown.append(close_event_streams)  # open streams must not hold up a shutdown
    api.install(app)
    dashboard.install(app)  # HTML and assets: not part of the JSON API's description
    return app
