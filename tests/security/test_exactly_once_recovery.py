"""A finished step runs once, even when its attempt is lost while the call is in flight.

The gateway keeps a call the provider is answering when the agent that made it dies: it is
paid for, and it is recorded when it settles. The next attempt must be answered from that
recording, so it starts only once the lost attempt's calls have settled (issue 14 §7, seen
under ``make chaos``: the next attempt re-issued the call and the run recorded it twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakellm import FakeConfig
from fakellm.config import Latency
from papayya.domain import events as ev
from tests.support.cloud import Cloud, running_cloud
from tests.support.exactly_once import (
    ONE_CALL,
    live_calls,
    provider_calls,
    start_attempt,
    wait_event,
)
from web import keys
from workers.runtime import Launch
from workers.sweeper import Sweeper

pytestmark = pytest.mark.timeout(120)

# Long enough that the next attempt would be running before the lost one's call returns.
PROVIDER_SECONDS = 5.0


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    slow = FakeConfig(latency=Latency(first_byte=PROVIDER_SECONDS))
    # A lease long enough that a loaded machine's late heartbeat does not end attempts too.
    async with running_cloud(
        dsn, monkeypatch, tmp_path, slow, max_attempts=5, lease_seconds=20, heartbeat_seconds=1
    ) as running:
        yield running


async def test_an_agent_killed_during_its_model_call_is_not_paid_twice(cloud: Cloud) -> None:
    await cloud.register("once", ONE_CALL)
    run_id = await cloud.start("once", input="hello")
    await wait_event(cloud.runs, run_id, ev.BudgetReserved)
    worker = cloud.services.worker
    assert worker is not None
    handle = worker._active[run_id].handle
    assert handle is not None
    os.kill(handle.pid, signal.SIGKILL)  # the call is still at the provider

    state = await cloud.wait(run_id, timeout=90)
    events = await cloud.runs.events(run_id)
    assert state.status == "completed", state.error_message
    assert state.attempt == 2
    assert provider_calls(cloud) == 1
    (call,) = live_calls(events)
    assert state.steps[call.step_number].attempt == 1
    # The lost attempt ended only after its call had settled and been recorded.
    kinds = [type(e) for e in events]
    assert kinds.index(ev.AttemptLost) > kinds.index(ev.BudgetSettled)


@pytest.fixture
async def idle_cloud(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as running:
        yield running


async def expire_lease(cloud: Cloud, run_id: str) -> None:
    await cloud.app[keys.STORE].pool.execute(
        "INSERT INTO run_leases (run_id, attempt, worker, expires_at)"
        " VALUES ($1, 1, 'gone', now() - interval '1 second')",
        run_id,
    )


async def test_the_sweeper_waits_for_a_lost_attempts_call_in_flight(idle_cloud: Cloud) -> None:
    cloud = idle_cloud
    await cloud.register("once", ONE_CALL)
    run_id, _ = await start_attempt(cloud, "once")
    state = await cloud.runs.load(run_id)
    reserved = ev.BudgetReserved(reservation_id="r1", amount_micro_usd=100, output_tokens=10)
    state = await cloud.runs.append(state, [reserved])
    await expire_lease(cloud, run_id)
    sweeper = Sweeper(cloud.app[keys.STORE], cloud.queue, max_attempts=3, settle_wait=60)

    await sweeper.recover_expired()
    assert (await cloud.runs.load(run_id)).status == "running"  # the call may still answer

    settled = ev.BudgetSettled(reservation_id="r1", actual_micro_usd=40, output_tokens=4)
    await cloud.runs.append(state, [settled])
    await sweeper.recover_expired()
    state = await cloud.runs.load(run_id)
    assert state.status == "queued" and state.committed.micro_usd == 40


async def test_a_reservation_older_than_any_call_is_settled_at_its_amount(
    idle_cloud: Cloud,
) -> None:
    cloud = idle_cloud
    await cloud.register("once", ONE_CALL)
    run_id, _ = await start_attempt(cloud, "once")
    state = await cloud.runs.load(run_id)
    reserved = ev.BudgetReserved(reservation_id="r1", amount_micro_usd=100, output_tokens=10)
    await cloud.runs.append(state, [reserved])
    await expire_lease(cloud, run_id)
    await asyncio.sleep(0.2)

    await Sweeper(cloud.app[keys.STORE], cloud.queue, settle_wait=0.1).recover_expired()
    events = await cloud.runs.events(run_id)
    stale = [e for e in events if isinstance(e, ev.BudgetSettled)]
    assert [(e.stale, e.actual_micro_usd, e.output_tokens) for e in stale] == [(True, 100, 10)]
    state = await cloud.runs.load(run_id)
    assert state.status == "queued" and not state.reservations
    assert state.committed.micro_usd == 100


class VanishedAgent:
    """An agent whose runtime lost track of it (its container was removed under it)."""

    stopped = False

    async def wait(self) -> int:
        raise RuntimeError("[404] No such container")

    async def stop(self, grace: float) -> None:
        self.stopped = True

    def output(self) -> str:
        return ""

    def lines(self) -> list[tuple[float, str]]:
        return []

    def counted(self) -> tuple[int, list[tuple[float, str]]]:
        return 0, []


class VanishingRuntime:
    name = "process"

    def __init__(self) -> None:
        self.agent = VanishedAgent()

    async def start(self, launch: Launch) -> VanishedAgent:
        return self.agent

    async def close(self) -> None:
        pass


async def test_a_worker_that_loses_track_of_its_agent_leaves_the_run_to_the_sweeper(
    idle_cloud: Cloud,
) -> None:
    cloud = idle_cloud
    await cloud.register("once", ONE_CALL)
    run_id = await cloud.start("once")
    # Once, by the dispatcher: a second message of the run would race its claim with this
    # one's (see the report: the loser of that race drops the winner's lease).
    while not await cloud.queue.depth():
        await asyncio.sleep(0.05)
    runtime = VanishingRuntime()
    worker = cloud.in_process_worker(burst=True, lease_seconds=1.0, heartbeat_seconds=0.2)
    worker.runtimes = {"process": runtime}
    await asyncio.wait_for(worker.run(), 30)

    assert runtime.agent.stopped
    # The lease was kept, so it expires and the sweeper recovers the run: before, the worker
    # dropped it and the run stayed running for ever.
    events = await wait_event(cloud.runs, run_id, ev.AttemptLost)
    lost = next(e for e in events if isinstance(e, ev.AttemptLost))
    assert lost.attempt == 1 and lost.reason == "lease_expired"
