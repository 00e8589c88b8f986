"""Hung agents do not run for ever (issue 19): a real worker, the process runtime and the
built-in loop, Postgres and Redis. A run past its time limit is stopped and ends ``failed``
with code ``timeout``; an agent whose heartbeats stop (its process frozen with SIGSTOP) is
found through ``run_heartbeats`` and stopped; a run within its limit completes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import Reply, ToolCall
from papayya.domain import events as ev
from tests.support.cloud import Cloud, running_cloud
from web import keys

pytestmark = pytest.mark.timeout(120)

# Writes its pid, then loops for ever and ignores the polite SIGTERM: only a kill stops it.
LOOPER = """
import os, signal, time
from papayya import agent

@agent
def looper():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(f"pid {os.getpid()}\\n")
    while True:
        time.sleep(0.05)
"""

# Writes its pid and waits (its heartbeat thread alive), unless an earlier attempt did so.
SLEEPER = """
import os, time
from papayya import agent

@agent
def sleeper():
    with open(os.environ["SIDE_EFFECTS"], "a+") as f:
        f.seek(0)
        if f.read():
            return "second attempt"
        f.write(f"pid {os.getpid()}\\n")
    time.sleep(60)
    return "woke"
"""

QUICK = """
from papayya import agent

@agent
def quick():
    return "done"
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


async def agent_pid(cloud: Cloud, count: int = 1, within: float = 30) -> int:
    """The pid the ``count``-th started agent wrote."""
    deadline = time.monotonic() + within
    while True:
        pids = [int(line.split()[1]) for line in cloud.side_effects() if line.startswith("pid")]
        if len(pids) >= count:
            return pids[count - 1]
        assert time.monotonic() < deadline, "the agent did not start"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def heartbeat_seen(cloud: Cloud, run_id: str, attempt: int, within: float = 30) -> None:
    pool = cloud.app[keys.STORE].pool
    deadline = time.monotonic() + within
    query = "SELECT 1 FROM run_heartbeats WHERE run_id = $1 AND attempt = $2"
    while not await pool.fetchval(query, run_id, attempt):
        assert time.monotonic() < deadline, "the agent sent no heartbeat"
        await asyncio.sleep(0.05)


async def test_an_agent_that_loops_for_ever_is_killed_at_its_time_limit(cloud: Cloud) -> None:
    await cloud.register("looper", LOOPER)
    # 3 s: room for a first start of the deployment's fork server on a busy machine.
    run_id = await cloud.start("looper", timeout_seconds=3)
    pid = await agent_pid(cloud)
    began = time.monotonic()
    run = await cloud.wait(run_id, timeout=30)
    took = time.monotonic() - began
    assert run.status == "failed" and run.error_code == "timeout", run.error_message
    assert "time limit of 3 s" in (run.error_message or "")
    assert took < 3 + 2 + 5  # the limit, the grace period (2 s here), then SIGKILL; slack
    assert not alive(pid)
    assert run.attempt == 1  # a timeout is not retried
    assert cloud.services.worker is not None and cloud.services.worker.active == 0


async def test_the_projects_default_limit_applies(cloud: Cloud) -> None:
    status, [project] = await cloud.call("GET", "/v1/projects")
    assert status == 200
    status, body = await cloud.call(
        "PATCH", f"/v1/projects/{project['id']}", {"default_timeout_seconds": 3}
    )
    assert status == 200 and body["default_timeout_seconds"] == 3, body
    await cloud.register("looper", LOOPER)
    run_id = await cloud.start("looper")
    pid = await agent_pid(cloud)
    run = await cloud.wait(run_id, timeout=30)
    assert run.status == "failed" and run.error_code == "timeout"
    assert run.timeout_seconds == 3 and "time limit of 3 s" in (run.error_message or "")
    assert not alive(pid)


async def test_a_run_within_a_generous_limit_completes(cloud: Cloud) -> None:
    await cloud.register("quick", QUICK, timeout_seconds=600)
    run = await cloud.wait(await cloud.start("quick"), timeout=30)
    assert run.status == "completed" and run.output == "done", run.error_message
    assert run.timeout_seconds == 600


def frozen_cloud(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, max_attempts: int
) -> Any:
    # Heartbeats every 0.5 s; silent for 2 s is frozen. The run's own limit is the default
    # hour, so only the heartbeats can stop it.
    monkeypatch.setenv("PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS", "2")
    return running_cloud(dsn, monkeypatch, tmp_path, max_attempts=max_attempts)


async def test_a_frozen_agent_is_found_by_its_heartbeats_and_stopped(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with frozen_cloud(dsn, monkeypatch, tmp_path, max_attempts=1) as cloud:
        await cloud.register("sleeper", SLEEPER)
        run_id = await cloud.start("sleeper")
        pid = await agent_pid(cloud)
        await heartbeat_seen(cloud, run_id, 1)
        os.kill(pid, signal.SIGSTOP)  # frozen: its process runs on, its heartbeats stop
        began = time.monotonic()
        run = await cloud.wait(run_id, timeout=30)
        took = time.monotonic() - began
    assert run.status == "failed" and run.error_code == "heartbeat_lost", run.error_message
    assert "attempt 1 of 1" in (run.error_message or "") and "2 s" in (run.error_message or "")
    assert took < 2 + 2 + 5  # silence bound, grace, then SIGKILL (a stopped process dies)
    assert not alive(pid)
    assert run.timeout_seconds == 3600


async def test_a_frozen_agent_is_retried_like_a_crashed_one(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with frozen_cloud(dsn, monkeypatch, tmp_path, max_attempts=2) as cloud:
        await cloud.register("sleeper", SLEEPER)
        run_id = await cloud.start("sleeper")
        pid = await agent_pid(cloud)
        await heartbeat_seen(cloud, run_id, 1)
        os.kill(pid, signal.SIGSTOP)
        run = await cloud.wait(run_id, timeout=40)
        events = await cloud.runs.events(run_id)
    assert run.status == "completed" and run.output == "second attempt", run.error_message
    assert run.attempt == 2 and not alive(pid)
    [lost] = [e for e in events if isinstance(e, ev.AttemptLost)]
    assert lost.attempt == 1 and lost.reason == "heartbeat_lost"


async def test_the_built_in_loop_is_cancelled_at_its_time_limit(cloud: Cloud) -> None:
    body = {"name": "ponder", "slug": "ponder", "config": {"model": "gpt-4o-mini"}}
    status, created = await cloud.call("POST", "/v1/agents", body)
    assert status == 201, created
    # Every model call takes 4 s and asks for a tool that does not exist, so the loop goes on
    # calling the model for as long as it is let.
    cloud.fake.configure(latency={"first_byte": 4.0})
    cloud.fake.script.extend([Reply(tool_calls=[ToolCall("nothing", {})])] * 20)
    run_id = await cloud.start("ponder", input="think", timeout_seconds=2)
    began = time.monotonic()
    run = await cloud.wait(run_id, timeout=30)
    took = time.monotonic() - began
    cloud.fake.script.clear()
    assert run.status == "failed" and run.error_code == "timeout", run.error_message
    assert "time limit of 2 s" in (run.error_message or "")
    # A model call in flight is carried on to its settlement (it cost money), then the run
    # ends; the loop never made a second call.
    assert took < 4 + 5 and cloud.fake.stats.total <= 1


async def test_a_run_out_of_time_when_its_worker_was_lost_is_not_started_again(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The lease (8 s) outlives the limit (5 s) whenever the worker is killed: the run is
    # queued again only once its time is up.
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False, lease_seconds=8) as cloud:
        await cloud.register("looper", LOOPER)
        first = await cloud.spawn_worker()
        run_id = await cloud.start("looper", timeout_seconds=5)
        pid = await agent_pid(cloud)
        first.send_signal(signal.SIGKILL)  # its agent dies with it; its lease runs out later
        await first.wait()
        await cloud.spawn_worker()
        run = await cloud.wait(run_id, timeout=40)
        events = await cloud.runs.events(run_id)
    assert run.status == "failed" and run.error_code == "timeout", run.error_message
    assert run.attempt == 2 and [e.attempt for e in events if isinstance(e, ev.AttemptLost)] == [1]
    assert [line for line in cloud.side_effects() if line.startswith("pid")] == [f"pid {pid}"]
    assert not alive(pid)
