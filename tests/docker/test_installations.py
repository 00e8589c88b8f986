"""Two installations (two servers on two databases) share one Docker engine: each labels
its containers with its installation id and removes only its own, and only those of
attempts that are over, even where the other's database knows a run of the same id."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.installation import installation_id
from papayya.readmodels.agents import Agents
from papayya.readmodels.deployments import Deployments
from papayya.runs import Runs
from tests.support.cloud import REDIS_URL
from tests.support.db import cloned_database
from tests.support.docker_cloud import containers_of, wait_for
from tests.support.operator import ServerProcess, bare_env, free_port, work_dir
from workers.docker import INSTALLATION_LABEL


@dataclass
class Installation:
    server: ServerProcess
    dsn: str
    key: str
    store: PostgresEventStore
    id: str

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.server.url + path, json=body,
                         headers={"X-Api-Key": self.key}) as response,
        ):  # fmt: skip
            return response.status, await response.json(content_type=None)

    async def probe_deployed(self, image: str) -> None:
        """An agent ``probe`` whose deployment is the session's sample image."""
        status, body = await self.call(
            "POST", "/v1/agents", {"name": "probe", "slug": "probe", "config": {}}
        )
        assert status == 201, body
        agent = await Agents(self.store).find(body["project_id"], body["id"])
        created = ev.DeploymentCreated(
            deployment_id=f"dep_{uuid.uuid4().hex[:16]}", project_id=agent.project_id,
            agent_id=agent.id, version=1, runtime="docker", entrypoint="probe.py",
        )  # fmt: skip
        repo = Deployments(self.store)
        await repo.create(agent.project_id, agent.id, created, "building")
        await repo.finish(created.deployment_id, image, None)

    async def lingering_run(self, docker: aiodocker.Docker) -> tuple[str, Any]:
        """A run whose container stays up; its id and its container."""
        task = {"secret": "none", "api_port": 1, "linger": 600}
        status, run = await self.call("POST", "/v1/agents/probe/runs", {"input": task})
        assert status == 201, run

        async def running() -> Any:
            for container in await containers_of(docker, run["id"]):
                if container._container["State"] == "running":
                    return container
            return None

        container = await wait_for(running, 120, f"run {run['id']}'s container")
        return run["id"], container

    async def ended_run(self, run_id: str) -> None:
        """A run of id ``run_id`` in this database whose first attempt is over."""
        runs = Runs(self.store)
        state = await runs.queue(
            ev.RunQueued(run_id=run_id, project_id="prj_elsewhere", agent_id="agt_elsewhere")
        )
        state = await runs.append(state, [ev.RunStarted(attempt=1)])
        await runs.append(state, [ev.RunFailed(code="agent_crashed")])


@asynccontextmanager
async def installation(dsn: str, work: Path) -> AsyncIterator[Installation]:
    key = "cpk_test_" + uuid.uuid4().hex
    env = bare_env(
        PAPAYYA_DATABASE_URL=dsn, PAPAYYA_REDIS_URL=REDIS_URL,
        PAPAYYA_QUEUE_NAME=f"papayya:test:{uuid.uuid4().hex}",
        PAPAYYA_DATA_DIR=str(work / "data"), PAPAYYA_BOOTSTRAP_API_KEY=key,
    )  # fmt: skip
    server = ServerProcess(free_port(), env, work / "server.log").start()
    store = await PostgresEventStore.connect(dsn)
    try:
        await server.ready()
        yield Installation(server, dsn, key, store, await installation_id(store.pool))
    finally:
        await store.close()
        await server.stop()
        server.kill()


async def stale_container(docker: aiodocker.Docker, image: str, run_id: str, owner: str) -> Any:
    """A container as a worker of ``owner`` that died would leave it."""
    labels = {"papayya.run": run_id, "papayya.attempt": "1", INSTALLATION_LABEL: owner}
    config = {"Image": image, "Cmd": ["sleep", "600"], "Labels": labels,
              "HostConfig": {"NetworkMode": "none"}}  # fmt: skip
    container = await docker.containers.create(config, name=f"papayya-stale-{run_id}")
    await container.start()
    return container


async def test_neither_installation_touches_the_others_containers(
    dsn: str, admin_dsn: str, template_db: str, sample_image: str, docker: aiodocker.Docker
) -> None:
    made: list[Any] = []
    with work_dir() as work_a, work_dir() as work_b:
        async with (
            cloned_database(admin_dsn, template_db) as dsn_b,
            installation(dsn, work_a) as a,
            installation(dsn_b, work_b) as b,
        ):
            assert a.id != b.id
            try:
                for each in (a, b):
                    await each.probe_deployed(sample_image)
                run_a, container_a = await a.lingering_run(docker)
                run_b, container_b = await b.lingering_run(docker)
                made += [container_a, container_b]
                for container, owner in ((container_a, a), (container_b, b)):
                    assert container._container["Labels"][INSTALLATION_LABEL] == owner.id

                # Each database now also knows the other's running run, as over: a worker
                # that went by run ids alone would remove the other's container.
                await a.ended_run(run_b)
                await b.ended_run(run_a)
                # And each has a leftover of its own, which its worker must remove.
                stale = {}
                for owner in (a, b):
                    stale_run = f"run_stale_{uuid.uuid4().hex[:12]}"
                    await owner.ended_run(stale_run)
                    stale[owner.id] = stale_run
                    made.append(await stale_container(docker, sample_image, stale_run, owner.id))

                async def both_reaped() -> bool:
                    left = [await containers_of(docker, r) for r in stale.values()]
                    return not any(left)

                await wait_for(both_reaped, 120, "each worker to remove its own leftover")
                for run_id, owner in ((run_a, a), (run_b, b)):
                    (container,) = await containers_of(docker, run_id)
                    assert container._container["State"] == "running"
                    status, run = await owner.call("GET", f"/v1/runs/{run_id}")
                    assert status == 200 and run["status"] == "running", run
                for run_id, owner in ((run_a, a), (run_b, b)):
                    await owner.call("POST", f"/v1/runs/{run_id}/cancel", {})
            finally:
                for container in made:
                    with contextlib.suppress(aiodocker.DockerError):
                        await container.delete(force=True)
