"""The server processes: ``papayya server`` runs everything in one process, on embedded
Postgres and Redis where none is configured (one server per data directory); ``api``,
``worker`` and ``scheduler`` (with ``projector``) run the parts apart, to scale out over
machines that share one Postgres and one Redis, and never start embedded ones."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from aiohttp import web

from papayya.config import Config
from papayya.database import database_url
from papayya.redisdb import redis_url
from server.lock import DataDirInUse, hold
from server.startup import bind, block, log_to, shown_url
from web import keys

if TYPE_CHECKING:
    from web.listener import Limits

# A Unix socket path must fit in sun_path (108 bytes on Linux).
MAX_SOCKET_PATH = 100


def default_socket(config: Config) -> Path:
    """Where the runtime API listens for agents: under the data dir if the path is short
    enough for a Unix socket, else in a directory of its own under the temp dir."""
    if config.runtime_socket is not None:
        return config.runtime_socket
    path = (config.data_dir / "papayya.sock").resolve()
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"papayya-{os.getuid()}-{digest}.sock"


@contextlib.contextmanager
def _backends(config: Config, redis: bool) -> Iterator[Config]:
    """``config`` with a database URL and (if wanted) a Redis URL, embedded ones started
    (only ``papayya server`` may: see ``required``)."""
    with database_url(config) as dsn, contextlib.ExitStack() as stack:
        config = dataclasses.replace(config, database_url=dsn)
        if redis:
            config = dataclasses.replace(config, redis_url=stack.enter_context(redis_url(config)))
        yield config


def required(config: Config, command: str, redis: bool) -> None:
    """Refuse to run a part apart without the shared Postgres (and Redis) it needs: one
    started embedded here would split the system in two, each half on its own database."""
    missing = [name for name, value in (("PAPAYYA_DATABASE_URL", config.database_url),
               ("PAPAYYA_REDIS_URL", config.redis_url if redis else "-")) if not value]  # fmt: skip
    if missing:
        raise click.ClickException(
            f"papayya {command} needs {' and '.join(missing)}: the parts run apart share one "
            "Postgres and one Redis, and only `papayya server` starts embedded ones"
        )


def _config(**overrides: object) -> Config:
    """``Config.from_env``, a bad setting refused with its message."""
    try:
        return Config.from_env(None, **overrides)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


async def _harden(app: object) -> None:
    """Once started (secrets read into the configuration): drop them from the environment and
    become non-dumpable, out of reach of process-runtime agents (workers/hardening.py)."""
    from workers.hardening import harden

    harden("papayya")


def _http_limits() -> Limits:
    """PAPAYYA_HTTP_* (web.listener.Limits), refused before anything starts if malformed."""
    from web.listener import Limits

    try:
        return Limits.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _serve(
    config: Config, host: str, sock: socket.socket, what: str, limits: Limits,
    log_file: Path | None,
) -> None:  # fmt: skip
    from server.app import drain, init_app
    from web.listener import serve

    dsn = config.database_url
    assert dsn is not None
    port = int(sock.getsockname()[1])
    socket_path = default_socket(config)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, port=port, runtime_socket=socket_path)
    notes = [f"runtime API: {socket_path}", config.process_runtime.describe()]
    if config.metrics_listen:
        notes.append(f"metrics: http://{config.metrics_listen}/metrics")
    elif not config.metrics_token:
        notes.append("metrics: off (set PAPAYYA_METRICS_TOKEN or PAPAYYA_METRICS_LISTEN)")
    app = init_app(config, dsn)
    url = shown_url(host, port)

    async def announce(app: web.Application) -> None:
        """Once everything started (the store open, a first key made): the block."""
        link = None
        if what == "server":  # the one-command path: a one-time dashboard login link
            from web.routes.login import login_link

            link = await login_link(app[keys.STORE].pool, url)
        key = app.get(keys.CREATED_KEY)
        example = None
        if config.process_runtime.mode == "all":  # agents registered here may run here
            import papayya

            example = Path(papayya.__file__).parent / "examples" / "hello.py"
        text = block(what, url, key=key, link=link, notes=notes, log_file=log_file,
                     example=example)  # fmt: skip
        print(text, flush=True)

    app.on_startup.append(announce)
    app.on_startup.append(_harden)  # after the cleanup contexts: secrets are read by then

    serve(app, host, port, str(socket_path), limits, sock=sock, before_stop=lambda: drain(app))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=0),
              help="Runs the built-in worker runs at once (0: no worker).")  # fmt: skip
def server(host: str, port: int, concurrency: int) -> None:
    """Run everything in one process: the API and gateway, projectors, the dispatcher,
    sweeper and callbacks, and a worker. Unset PAPAYYA_DATABASE_URL / PAPAYYA_REDIS_URL
    start embedded Postgres / Redis under PAPAYYA_DATA_DIR (adopted again after a crash,
    stopped at exit); one server per data directory. SIGTERM drains the worker (running runs
    finish, PAPAYYA_DRAIN_SECONDS) while the API still serves. Agents run in Docker; the
    process runtime only where PAPAYYA_PROCESS_RUNTIME allows it (`make run` sets all).

    HTTP limits: PAPAYYA_HTTP_HEADER_TIMEOUT (10 s), _BODY_TIMEOUT (60 s), _IDLE_TIMEOUT
    (75 s), _MAX_CONNECTIONS (10000), _MAX_CONNECTIONS_PER_ADDRESS (256, 0: off),
    _FD_RESERVE (256), _BACKLOG (1024), _MAX_LINE_BYTES (8190), _MAX_HEADERS (128);
    _ACCESS_LOG: which requests the access log has (errors: those not answered 2xx, the
    default; all; off)."""
    limits = _http_limits()
    config = _config(
        host=host, port=port, worker_concurrency=concurrency, run_worker=concurrency > 0
    )
    _check_server_settings(config)
    try:
        lock = hold(config.data_dir)  # before anything else: the backends are this one's
    except DataDirInUse as exc:
        raise click.ClickException(str(exc)) from None
    with lock:
        sock = bind(host, port)
        log_file = log_to(config, "server")
        with _backends(config, redis=True) as config:
            _serve(config, host, sock, "server", limits, log_file)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def api(host: str, port: int) -> None:
    """Serve only the API, the gateway and the runtime API (scale out behind a balancer;
    run `papayya projector`, `papayya scheduler` and `papayya worker` elsewhere). Needs
    PAPAYYA_DATABASE_URL: the parts run apart never start embedded backends.
    HTTP limits: PAPAYYA_HTTP_* as for `papayya server`."""
    limits = _http_limits()
    config = _config(
        host=host, port=port, run_projectors=False, run_dispatcher=False, run_worker=False,
        run_scheduler=False,
    )  # fmt: skip
    _check_server_settings(config)
    required(config, "api", redis=False)
    sock = bind(host, port)
    log_file = log_to(config, "api")
    _serve(config, host, sock, "api", limits, log_file)


async def _background(config: Config, *, scheduler: bool, worker: bool, burst: bool,
                      runtime: str) -> None:  # fmt: skip
    from eventstore.migrations import migrate
    from eventstore.postgres import PostgresEventStore
    from papayya.installation import installation_id
    from papayya.triggers.firing import running_scheduler
    from server.control import beside_api, check_control
    from workers.docker import DockerRuntime
    from workers.process import ProcessRuntime
    from workers.runtime import Runtime
    from workers.services import background
    from workers.worker import WorkerConfig

    assert config.database_url is not None and config.redis_url is not None
    await migrate(config.database_url)
    store = await PostgresEventStore.connect(config.database_url)
    try:
        installation = await installation_id(store.pool)
        base = os.environ.get("PAPAYYA_BASE_URL") or f"http://127.0.0.1:{config.port}"
        worker_config = WorkerConfig.from_env(
            control_url=config.control_url or base,
            control_socket=config.runtime_socket,
            concurrency=config.worker_concurrency,
            burst=burst,
        )
        if worker:  # its agents must reach the API of this installation, not another's
            worker_config = await beside_api(worker_config, default_socket(config), installation)
            await check_control(worker_config, installation)
    except BaseException:
        await store.close()
        raise
    await _harden(None)  # the configuration holds what it needs: before any agent starts
    runtimes: dict[str, Runtime] = {}
    if runtime in ("process", "all"):
        runtimes["process"] = ProcessRuntime(config.data_dir)
    if runtime in ("docker", "all"):
        runtimes["docker"] = DockerRuntime(installation=installation)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if scheduler:  # cron schedules fire here too
                await stack.enter_async_context(running_scheduler(store))
            services = await stack.enter_async_context(background(
                store, config.database_url, config, config.redis_url,
                scheduler=scheduler, worker=worker, worker_config=worker_config,
                runtimes=runtimes,
            ))  # fmt: skip
            waiting = [asyncio.create_task(done.wait())]
            if burst and services.worker is not None:
                waiting.append(asyncio.create_task(services.worker.run_finished.wait()))
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for task in waiting:
                task.cancel()
            if done.is_set():
                click.echo("stopping: draining running work", err=True)
    finally:
        for each in runtimes.values():
            await each.close()
        await store.close()


def _check_server_settings(config: Config) -> None:
    """Refuse a malformed PAPAYYA_BOOTSTRAP_API_KEY, PAPAYYA_METRICS_TOKEN or
    PAPAYYA_METRICS_LISTEN before any database is started or written."""
    from papayya.errors import InvalidInput
    from papayya.readmodels.projects import BOOTSTRAP_ENV, check_bootstrap_key
    from web.routes.metrics import check_config

    try:
        check_bootstrap_key(os.environ.get(BOOTSTRAP_ENV) or None)
        check_config(config.metrics_token, config.metrics_listen)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from exc


def _check_timing() -> None:
    """Refuse bad PAPAYYA_*_SECONDS / PAPAYYA_MAX_ATTEMPTS before anything starts."""
    from workers.worker import WorkerConfig

    try:
        WorkerConfig.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--runtime", type=click.Choice(["all", "process", "docker"]), default="all",
              show_default=True,
              help="Runtimes offered: a deployment says which one its runs need.")  # fmt: skip
@click.option("--burst", is_flag=True, help="Exit once the queue is empty (for tests, batch jobs).")
def worker(concurrency: int, runtime: str, burst: bool) -> None:
    """Claim queued runs from Redis and run them (SIGTERM drains: running runs finish first).
    Needs PAPAYYA_DATABASE_URL and PAPAYYA_REDIS_URL; checks at start that the API its agents
    reach answers and serves the same database (installation), and refuses otherwise.

    \b
    PAPAYYA_CONTROL_URL or PAPAYYA_BASE_URL   where agents reach the API (TCP)
    PAPAYYA_RUNTIME_SOCKET                    ...or its Unix socket (default: the
                                              data dir's, if this installation's API
                                              listens there)
    PAPAYYA_HEARTBEAT_SECONDS (15), PAPAYYA_LEASE_SECONDS (60), PAPAYYA_GRACE_SECONDS (10),
    PAPAYYA_DRAIN_SECONDS (30), PAPAYYA_MAX_ATTEMPTS (3), PAPAYYA_AGENT_ENV (names passed on)
    PAPAYYA_PROCESS_RUNTIME   whose process deployments it runs: off (default), all,
                              projects:<id>,<id>
    PAPAYYA_SETTLE_WAIT_SECONDS (600)   how long a lost attempt waits for its calls in flight
    PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS (the lease)   an agent silent this long is frozen:
                              stopped, retried, then failed heartbeat_lost
    PAPAYYA_OUTPUT_FLUSH_SECONDS (2)   how often a running agent's new output is recorded
                              (0.1 to 60; runs logs -f shows it live)
    """
    _check_timing()
    config = _config(worker_concurrency=concurrency)
    required(config, "worker", redis=True)
    log_to(config, "worker")
    click.echo(config.process_runtime.describe())
    asyncio.run(_background(config, scheduler=False, worker=True, burst=burst,
                            runtime=runtime))  # fmt: skip


@click.command()
def scheduler() -> None:
    """Run cron schedules, the dispatcher (queued runs → Redis), the recovery sweeper and
    callbacks. Any number may run: each fire, enqueue and recovery happens once. Needs
    PAPAYYA_DATABASE_URL and PAPAYYA_REDIS_URL."""
    _check_timing()
    config = _config()
    required(config, "scheduler", redis=True)
    log_to(config, "scheduler")
    asyncio.run(_background(config, scheduler=True, worker=False, burst=False,
                            runtime="none"))  # fmt: skip
