"""The background services of cloud execution, started together in any process: the
dispatcher, the recovery sweeper and callbacks (the ``scheduler`` role) and a worker with the
process and Docker runtimes (the ``worker`` role). ``papayya server`` runs both roles inside the API
process; ``papayya scheduler`` and ``papayya worker`` run one each."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.metering.upstreams import call_timeout
from papayya.readmodels.projectsecrets import ProjectSecrets
from papayya.readmodels.secrets import Secrets
from papayya.secretbox import SecretBox, load_key
from projections.runner import ProjectionRunner
from workers.agentloop import AgentLoopRuntime
from workers.callbacks import CallbackOutbox, Deliverer
from workers.dispatcher import Dispatcher
from workers.process import ProcessRuntime
from workers.queue import RunQueue, connect
from workers.runtime import Runtime
from workers.sweeper import Sweeper
from workers.worker import Worker, WorkerConfig

log = logging.getLogger(__name__)


@dataclass
class Services:
    queue: RunQueue
    worker: Worker | None = None
    sweeper: Sweeper | None = None
    deliverer: Deliverer | None = None
    runners: list[ProjectionRunner] = field(default_factory=list)


@asynccontextmanager
async def background(
    store: PostgresEventStore,
    dsn: str,
    config: Config,
    redis_url: str,
    *,
    scheduler: bool,
    worker: bool,
    worker_config: WorkerConfig | None = None,
    runtimes: dict[str, Runtime] | None = None,
) -> AsyncIterator[Services]:
    client = connect(redis_url)
    queue = RunQueue(client, stream=config.queue_name)
    services = Services(queue)
    stoppers: list[Callable[[], None]] = []
    tasks: list[asyncio.Task[Any]] = []

    def start(name: str, run: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
        tasks.append(asyncio.create_task(run(), name=name))  # type: ignore[arg-type]
        stoppers.append(stop)

    if scheduler:
        for projector in (Dispatcher(store, queue), CallbackOutbox(store)):
            runner = ProjectionRunner(store, projector, dsn, poll_interval=1.0)
            services.runners.append(runner)
            start(projector.name, runner.run, runner.stop)
        wc = worker_config or WorkerConfig.from_env()
        services.sweeper = Sweeper(store, queue, max_attempts=wc.max_attempts,
                                   interval=min(5.0, wc.lease_seconds / 4),
                                   settle_wait=wc.settle_wait_seconds)  # fmt: skip
        start("sweeper", services.sweeper.run, services.sweeper.stop)
        backoff = float(os.environ.get("PAPAYYA_CALLBACK_BACKOFF_SECONDS") or 1.0)
        services.deliverer = Deliverer(
            store, backoff_seconds=backoff, allow_private=config.callback_allow_private
        )
        start("callbacks", services.deliverer.run, services.deliverer.stop)
    own_runtimes: list[Runtime] = []
    if worker:
        if runtimes is None:
            # The deployment says where its agent runs: a registered module as a local
            # process, a built image in Docker (which is contacted only when first used).
            from workers.docker import DockerRuntime

            runtimes = {"process": ProcessRuntime(config.data_dir), "docker": DockerRuntime()}
            own_runtimes += runtimes.values()
        if "agentloop" not in runtimes:
            # Agents of configuration alone: a loop inside this process (issue 17).
            loop = AgentLoopRuntime(
                store, dict(config.upstreams), allow_private=config.callback_allow_private,
                call_timeout=call_timeout(),
            )  # fmt: skip
            runtimes = {**runtimes, loop.name: loop}
            own_runtimes.append(loop)
        wc = worker_config or WorkerConfig.from_env(
            control_url=config.control_url or f"http://127.0.0.1:{config.port}",
            control_socket=config.runtime_socket,
            concurrency=config.worker_concurrency,
        )
        # The process's Config is the one truth on whose agents may run as processes.
        wc = dataclasses.replace(wc, process_runtime=config.process_runtime)
        secret = await Secrets(store).server()
        box = SecretBox(load_key(config.secrets_key, config.data_dir))
        opened = ProjectSecrets(store, box).environment
        services.worker = Worker(store, queue, runtimes, secret, wc, project_secrets=opened)
        start("worker", services.worker.run, services.worker.stop)
    try:
        yield services
    finally:
        for stop in reversed(stoppers):
            stop()
        for task in reversed(tasks):
            try:
                await asyncio.wait_for(task, 60)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:
                log.exception("%s stopped with an error", task.get_name())
        for runtime in own_runtimes:
            await runtime.close()
        with contextlib.suppress(Exception):
            await client.aclose()
