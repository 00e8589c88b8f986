"""``init_app(config, dsn)``: the whole server as one aiohttp application.

``web.app.init_app`` serves the API, the gateway and the runtime API; this adds the
background pieces a process runs beside them, each in a ``cleanup_ctx`` of its own and each
switched by its ``Config`` flag: the projectors (``run_projectors``), the dispatcher, sweeper
and callbacks (``run_dispatcher``) and a worker (``run_worker``), both only with Redis, the
cron scheduler (``run_scheduler``) and the image builder (``run_builder``). They live here,
not in ``web/``, because they need ``workers/``, which ``web/`` must not import
(docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from papayya.config import Config
from papayya.triggers.firing import running_scheduler
from projections.service import Projections
from server.builds import builds_ctx
from web import app as web_app
from web import keys
from workers.docker import DockerRuntime
from workers.process import ProcessRuntime
from workers.queue import connect
from workers.runtime import Runtime
from workers.services import Services, background
from workers.worker import WorkerConfig

log = logging.getLogger(__name__)

# The background services of a running app, for draining at SIGTERM (``drain``), and how
# long its worker may drain (PAPAYYA_DRAIN_SECONDS).
SERVICES = web.AppKey("services", Services)
DRAIN_SECONDS = web.AppKey("drain_seconds", float)


def init_app(config: Config, dsn: str) -> web.Application:
    """``web.app.init_app`` and the background services ``config`` asks for. They start after
    the web app's contexts (whose event store they use) and stop before them."""
    app = web_app.init_app(config, dsn)
    app.cleanup_ctx.append(projectors_ctx)
    app.cleanup_ctx.append(cloud_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    app.cleanup_ctx.append(builds_ctx)
    return app


async def projectors_ctx(app: web.Application) -> AsyncIterator[None]:
    """The read models (runs list, usage, dashboard) kept up to date in this process; with
    several servers one leader per projector is elected and the others stand by."""
    if not app[keys.CONFIG].run_projectors:
        yield
        return
    projections = Projections(app[keys.STORE], app[keys.DSN], poll_interval=0.5)
    task = asyncio.create_task(projections.run(), name="projectors")

    async def projectors() -> str | None:
        if not task.done():
            return None
        error = None if task.cancelled() else task.exception()
        return f"projectors: stopped ({error!r})"

    app[keys.READINESS].append(projectors)
    yield
    projections.stop()
    try:
        await asyncio.wait_for(task, 10)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()


async def cloud_ctx(app: web.Application) -> AsyncIterator[None]:
    """The dispatcher, sweeper, callbacks and a worker in this process, as configured (they
    need Redis: ``papayya server`` starts an embedded one when none is configured)."""
    config = app[keys.CONFIG]
    if not config.redis_url or not (config.run_dispatcher or config.run_worker):
        yield
        return
    worker_config = None
    runtimes: dict[str, Runtime] = {}
    if config.run_worker:
        worker_config = WorkerConfig.from_env(
            control_url=config.control_url or f"http://127.0.0.1:{config.port}",
            control_socket=config.runtime_socket,
            concurrency=config.worker_concurrency,
        )
        # A SIGTERM drains the worker (``drain``) while the API still serves its agents.
        # Stopped here instead, the API has stopped listening and agents could not report:
        # hand running attempts back at once (they resume next time).
        app[DRAIN_SECONDS] = worker_config.drain_seconds
        worker_config = dataclasses.replace(worker_config, drain_seconds=0.0)
        runtimes = {
            "process": ProcessRuntime(config.data_dir),
            "docker": DockerRuntime(installation=app[keys.INSTALLATION]),
        }
    ping = connect(config.redis_url)

    async def queue() -> str | None:
        try:
            await ping.ping()
        except Exception as exc:
            return f"queue (Redis): not answering ({type(exc).__name__})"
        return None

    app[keys.READINESS].append(queue)
    try:
        async with background(
            app[keys.STORE], app[keys.DSN], config, config.redis_url,
            scheduler=config.run_dispatcher, worker=config.run_worker,
            worker_config=worker_config, runtimes=runtimes,
        ) as services:  # fmt: skip
            app[SERVICES] = services
            yield
    finally:
        for runtime in runtimes.values():
            await runtime.close()
        with contextlib.suppress(Exception):
            await ping.aclose()


async def drain(app: web.Application) -> None:
    """Let the worker of this process finish its running attempts (``PAPAYYA_DRAIN_SECONDS``)
    and hand back the rest, as a ``papayya worker`` does at SIGTERM. Called before the API
    stops listening, so that agents can still report and complete."""
    services = app.get(SERVICES)
    if services is None or services.worker is None:
        return
    worker = services.worker
    seconds = app[DRAIN_SECONDS]
    if worker.active:
        log.warning(
            "stopping: %d running runs get %.0f s to finish (PAPAYYA_DRAIN_SECONDS); the rest "
            "resume later", worker.active, seconds,
        )  # fmt: skip
    # The worker reads its drain time when it stops: give it the configured one (cloud_ctx).
    worker.config = dataclasses.replace(worker.config, drain_seconds=seconds)
    worker.stop()
    await worker.run_finished.wait()


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cron scheduler inside the server (``Config.run_scheduler``)."""
    if not app[keys.CONFIG].run_scheduler:
        yield
        return
    async with running_scheduler(app[keys.STORE]):
        yield
