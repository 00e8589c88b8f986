"""Hung agents in containers (issue 19): a run past its time limit has its container stopped
and removed, and ends ``failed`` with code ``timeout``; a frozen container (``docker
pause``: its heartbeats stop) is found through ``run_heartbeats``, stopped, and its run
retried like a crashed one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from papayya.domain import events as ev
from tests.support.docker_cloud import DockerCloud, containers_of, running_docker_cloud, wait_for


async def paused_run(
    cloud: DockerCloud, docker: aiodocker.Docker, image: str, **options: Any
) -> tuple[str, Any]:
    """A run of the sample agent, once it sleeps after its checkpoint, and its container."""
    agent = await cloud.agent("weather")
    await cloud.image_deployment(agent, image, "agent.py")
    body = {"input": {"question": "Oslo?", "pause": True}, **options}
    status, run = await cloud.call("POST", "/v1/agents/weather/runs", body)
    assert status == 201, run

    async def paused() -> Any:
        state = await cloud.runs.load(run["id"])
        found = await containers_of(docker, run["id"])
        return found[0] if len(state.steps) == 2 and found else None

    return run["id"], await wait_for(paused, 90, "the agent to pause")


async def gone(docker: aiodocker.Docker, run_id: str) -> bool:
    return not await containers_of(docker, run_id)


async def test_a_container_past_its_time_limit_is_stopped_and_removed(
    cloud: DockerCloud, sample_image: str, docker: aiodocker.Docker
) -> None:
    run_id, _ = await paused_run(cloud, docker, sample_image, timeout_seconds=30)
    state = await cloud.wait(run_id, 60)
    assert state.status == "failed" and state.error_code == "timeout", state.error_message
    assert state.started_at is not None and state.completed_at is not None
    assert (state.completed_at - state.started_at).total_seconds() < 30 + 2 + 10
    await wait_for(lambda: gone(docker, run_id), 20, "the container to be removed")


@pytest.fixture
async def frozen_cloud(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, services_env: dict[str, str]
) -> AsyncIterator[DockerCloud]:
    monkeypatch.setenv("PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS", "3")
    async with running_docker_cloud(dsn, monkeypatch, tmp_path, services_env) as running:
        yield running


async def test_a_frozen_container_is_found_by_its_heartbeats_and_its_run_retried(
    frozen_cloud: DockerCloud, sample_image: str, docker: aiodocker.Docker
) -> None:
    cloud = frozen_cloud
    run_id, container = await paused_run(cloud, docker, sample_image)
    await container.pause()  # every process of it frozen: its heartbeats stop
    state = await cloud.wait(run_id, 90)
    assert state.status == "completed", state.error_message  # the second attempt's
    lost = [e for e in await cloud.runs.events(run_id) if isinstance(e, ev.AttemptLost)]
    assert [(e.attempt, e.reason) for e in lost] == [(1, "heartbeat_lost")]
    await wait_for(lambda: gone(docker, run_id), 20, "the containers to be removed")
