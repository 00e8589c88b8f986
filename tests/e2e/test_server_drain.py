"""``papayya server`` drains at SIGTERM as a ``papayya worker`` does: a run in flight
finishes in its attempt (its agent still reaching the API, which serves until the drain is
over) instead of being handed back to the queue."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from tests.support.cloud import REDIS_URL
from tests.support.operator import ServerProcess, free_port, local_server_env, work_dir
from tests.support.process_runtime import bundle, call, deploy, rows, two_tenants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Checkpoints, then works a little longer: a SIGTERM comes between the two.
AGENT = b"""
import time

from papayya import agent, current_run


@agent
def slow(task):
    current_run().task("started", lambda: True)
    time.sleep(task["seconds"])
    return {"finished": True}
"""


async def events_of(dsn: str, run_id: str) -> list[str]:
    found = await rows(
        dsn, f"SELECT event_type FROM events WHERE stream_id = 'run-{run_id}' "
        "ORDER BY stream_version",
    )  # fmt: skip
    return [row["event_type"] for row in found]


async def test_a_sigterm_lets_the_running_run_finish(dsn: str) -> None:
    owner, _ = await two_tenants(dsn)
    with work_dir() as work:
        work.chmod(0o1777)  # the agent runs as a uid of its project's when tests run as root
        env = local_server_env(dsn, REDIS_URL, work / "data", owner.key)
        server = ServerProcess(free_port(), env, work / "server.log", ("--concurrency", "1"))
        server.start()
        try:
            await server.ready()
            base = server.url
            async with aiohttp.ClientSession() as http:
                agent = {"name": "slow", "slug": "slow", "config": {}}
                status, body = await call(http, "POST", f"{base}/v1/agents", owner, agent)
                assert status == 201, body
                status, body = await deploy(
                    http, base, owner, "slow", bundle({"agent.py": AGENT}), runtime="process"
                )
                assert status == 202, body
                status, run = await call(
                    http, "POST", f"{base}/v1/agents/slow/runs", owner,
                    {"input": {"seconds": 3}},
                )  # fmt: skip
                assert status == 201, run
            async with asyncio.timeout(90):
                while "CheckpointSaved" not in await events_of(dsn, run["id"]):
                    await asyncio.sleep(0.1)
            assert await server.stop(signal.SIGTERM) == 0, server.log.read_text()
        finally:
            server.kill()
        log = server.log.read_text()
    history = await events_of(dsn, run["id"])
    assert "RunCompleted" in history, (history, log)
    assert "AttemptLost" not in history and history.count("RunStarted") == 1, history
