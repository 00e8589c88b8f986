"""A control plane that containers can reach: the API on loopback TCP and on a Unix socket,
its gateway in front of the fake provider, the scheduler role, and optionally a worker with
the Docker runtime, on a queue of the test's own."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiodocker
import aiohttp
import pytest

from fakellm import FakeConfig, Usage
from fakellm.testing import FakeServer, running_fake
from papayya import runtokens
from papayya.config import Config
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.readmodels.agents import Agent
from papayya.runs import Runs
from tests.support.cloud import REDIS_URL, TERMINAL, free_port
from tests.support.gateway import PROVIDER_KEY
from web import keys
from workers.docker import DockerRuntime
from workers.queue import connect
from workers.runtime import Deployment, Limits
from workers.services import Services, background
from workers.worker import WorkerConfig

T = TypeVar("T")
# The sample agent (openai SDK, requirements.txt, a probe module) the docker tests build.
SAMPLE = Path(__file__).parents[1] / "docker" / "sample_agent"


@dataclass
class DockerCloud:
    url: str
    socket: Path
    key: str
    app: Any
    fake: FakeServer
    services: Services
    config: Config

    @property
    def runs(self) -> Runs:
        return self.app[keys.RUNS]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body, headers=self.headers) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def agent(self, slug: str) -> Agent:
        status, body = await self.call(
            "POST", "/v1/agents", {"name": slug, "slug": slug, "config": {}}
        )
        assert status == 201, body
        return await self.app[keys.AGENTS].find(body["project_id"], body["id"])

    async def image_deployment(self, agent: Agent, image: str, entrypoint: str) -> Deployment:
        """A ready docker deployment of an image built elsewhere (the session's sample)."""
        repo = self.app[keys.DEPLOYMENTS]
        created = ev.DeploymentCreated(
            deployment_id=f"dep_{uuid.uuid4().hex[:16]}", project_id=agent.project_id,
            agent_id=agent.id, version=1, runtime="docker", entrypoint=entrypoint,
        )  # fmt: skip
        await repo.create(agent.project_id, agent.id, created, "building")
        await repo.finish(created.deployment_id, image, None)
        return Deployment.from_row(await repo.find(agent.project_id, created.deployment_id))

    async def running_run(self, agent: Agent, input: Any) -> tuple[RunState, str]:
        """A run in its first attempt and its token, as a worker makes them."""
        queued = ev.RunQueued(
            run_id=f"run_{uuid.uuid4().hex[:12]}", project_id=agent.project_id,
            agent_id=agent.id, input=input,
        )  # fmt: skip
        state = await self.runs.queue(queued)
        state = await self.runs.append(state, [ev.RunStarted(attempt=1)])
        token = runtokens.mint(self.app[keys.RUN_TOKEN_SECRET], state.run_id, 1)
        return state, token

    async def wait(self, run_id: str, timeout: float = 90, statuses: Any = TERMINAL) -> RunState:
        async def check() -> RunState | None:
            state = await self.runs.load(run_id)
            return state if state.status in statuses else None

        return await wait_for(check, timeout, f"run {run_id} to be one of {sorted(statuses)}")


async def wait_for(
    check: Callable[[], Awaitable[T | None]], timeout: float = 60, what: str = "a condition"
) -> T:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


async def containers_of(docker: aiodocker.Docker, run_id: str) -> list[Any]:
    return list(
        await docker.containers.list(all=True, filters={"label": [f"papayya.run={run_id}"]})
    )


def short_tmp() -> Path:
    """A directory with a short path: a Unix socket's path must fit in 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))


@asynccontextmanager
async def running_docker_cloud(
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    services_env: dict[str, str],
    *,
    worker: bool = True,
    limits: Limits | None = None,
) -> AsyncIterator[DockerCloud]:
    from aiohttp import web

    from server.app import init_app

    fake_config = FakeConfig(usage=Usage(prompt_tokens=100, completion_tokens=20))
    tmp = short_tmp()
    socket = tmp / "api.sock"
    async with running_fake(fake_config) as fake:
        for name, value in {
            "PAPAYYA_OPENAI_BASE_URL": fake.openai_base_url,
            "PAPAYYA_OPENAI_API_KEY": PROVIDER_KEY,
            "PAPAYYA_ANTHROPIC_BASE_URL": fake.anthropic_base_url,
            "PAPAYYA_ANTHROPIC_API_KEY": PROVIDER_KEY,
            "PAPAYYA_HEARTBEAT_SECONDS": "0.5",
            "PAPAYYA_LEASE_SECONDS": "5",
            "PAPAYYA_GRACE_SECONDS": "2",
            "PAPAYYA_MAX_ATTEMPTS": "3",
            "PAPAYYA_BOOTSTRAP_API_KEY": "cpk_test_" + uuid.uuid4().hex,
        }.items():
            monkeypatch.setenv(name, value)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = Config(
            database_url=dsn, redis_url=REDIS_URL, data_dir=data_dir, port=port,
            control_url=url, queue_name=f"papayya:test:{uuid.uuid4().hex}",
            runtime_socket=socket, run_projectors=False, run_dispatcher=False,
            run_worker=False, s3_endpoint=services_env["PAPAYYA_S3_ENDPOINT"],
            s3_bucket=services_env["PAPAYYA_S3_BUCKET"],
            registry=services_env["PAPAYYA_REGISTRY"],
            base_image=services_env["PAPAYYA_BASE_IMAGE"],
        )  # fmt: skip
        app = init_app(config, dsn)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await web.UnixSite(runner, str(socket)).start()
        runtime = DockerRuntime()
        wc = WorkerConfig.from_env(control_url=url, control_socket=socket)
        if limits is not None:
            wc = WorkerConfig.from_env(control_url=url, control_socket=socket, limits=limits)
        try:
            async with background(
                app[keys.STORE], dsn, config, REDIS_URL, scheduler=True, worker=worker,
                worker_config=wc, runtimes={"docker": runtime},
            ) as services:  # fmt: skip
                yield DockerCloud(
                    url, socket, os.environ["PAPAYYA_BOOTSTRAP_API_KEY"], app, fake, services,
                    config,
                )  # fmt: skip
        finally:
            await runtime.close()
            client = connect(REDIS_URL)
            await client.delete(config.queue_name)
            await client.aclose()
            await runner.cleanup()
            shutil.rmtree(tmp, ignore_errors=True)
