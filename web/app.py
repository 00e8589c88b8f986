"""``init_app(config, dsn)``: the aiohttp application factory of the API, the gateway and the
runtime API. The background pieces a server also runs (projectors, scheduler, dispatcher,
worker, image builds) are wired by the composition root, ``server.app.init_app``."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.errors import NotReady, ProjectionFailing
from papayya.readmodels.projects import BOOTSTRAP_ENV, check_bootstrap_key
from papayya.runstates import RunStates
from projections.service import failing as projection_failures
from web import http, keys, readmodels
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
    run_logs,
    runs,
    runtime,
    schedules,
    secrets,
    unsupported,
    usage,
    webhooks,
)
from web.sse import close_all as close_event_streams
from web.sse import sse_ctx

log = logging.getLogger(__name__)
# How long /readyz waits for each part to answer.
READY_SECONDS = 3.0


async def _event_store(app: web.Application) -> AsyncIterator[None]:
    bootstrap_key = os.environ.get(BOOTSTRAP_ENV) or None
    check_bootstrap_key(bootstrap_key)  # before anything is written
    await migrate(app[keys.DSN])
    store = await PostgresEventStore.connect(app[keys.DSN])
    app[keys.STORE] = store
    app[keys.RUNS] = RunStates(store)
    readmodels.install(app, store)
    try:
        created = await app[keys.PROJECTS].bootstrap(bootstrap_key)
        app[keys.INSTALLATION] = await app[keys.PROJECTS].installation()
    except BaseException:
        await store.close()
        raise
    if created is not None and not bootstrap_key:
        # Shown once (only its hash is stored), in the start-up block of server/.
        app[keys.CREATED_KEY] = created.key
    yield
    await store.close()


@api.route(
    "GET", "/healthz", "Liveness, and the installation this API serves (a worker checks it "
    "is its own)", auth="none", tag="ops",
)  # fmt: skip
async def healthz(request: web.Request) -> web.Response:
    return http.json({"status": "ok", "installation": request.app[keys.INSTALLATION]})


@api.route(
    "GET", "/readyz", "Readiness: the database and the queue answer, this process's "
    "projectors run, and no projector is stuck on an event (503 naming what is not)",
    auth="none", tag="ops",
)  # fmt: skip
async def readyz(request: web.Request) -> web.Response:
    problems: list[str] = []
    failures = []
    try:
        failures = await asyncio.wait_for(
            projection_failures(request.app[keys.STORE]), READY_SECONDS
        )
    except Exception as exc:
        log.warning("readyz: the database does not answer: %r", exc)
        problems.append("database: not answering")
    for check in request.app[keys.READINESS]:
        try:
            problem = await asyncio.wait_for(check(), READY_SECONDS)
        except Exception as exc:
            problem = f"{getattr(check, '__name__', 'check')}: {type(exc).__name__}"
        if problem is not None:
            problems.append(problem)
    if problems:
        raise NotReady("; ".join(problems))
    if failures:
        # Unauthenticated: the projector and the event, not the error (it may quote data).
        said = "; ".join(f.describe(why=False) for f in failures)
        raise ProjectionFailing(f"{said} (papayya projections status says why)")
    return http.json({"status": "ready"})


@api.route("GET", "/openapi.json", "This API's OpenAPI 3.1 description", auth="none", tag="ops")
async def openapi(request: web.Request) -> web.Response:
    return http.json(api.spec())


def init_app(config: Config, dsn: str) -> web.Application:
    metrics.check_config(config.metrics_token, config.metrics_listen)  # before anything starts
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=http.MAX_BODY_BYTES
    )
    app[keys.CONFIG] = config
    app[keys.DSN] = dsn
    app[keys.READINESS] = []
    app[keys.AUTH_LIMITER] = AuthLimiter(
        config.auth_failure_limit, config.auth_failure_window_seconds
    )
    app.cleanup_ctx.append(_event_store)
    app.cleanup_ctx.append(sse_ctx)  # needs the store and its run states
    app.cleanup_ctx.append(key_watch_ctx)  # revoked keys end their streams
    app.cleanup_ctx.append(gateway_ctx)
    app.cleanup_ctx.append(deploy.blobs_ctx)  # uploaded bundles
    app.cleanup_ctx.append(metrics_collector)  # needs the store: after _event_store
    app.cleanup_ctx.append(metrics.listener_ctx)  # PAPAYYA_METRICS_LISTEN
    app.on_shutdown.append(close_event_streams)  # open streams must not hold up a shutdown
    api.install(app)
    dashboard.install(app)  # HTML and assets: not part of the JSON API's description
    return app
