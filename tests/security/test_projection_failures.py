"""A projector that cannot get past an event shows it (issue 14 §2): its lag grows and
``papayya_projection_failing`` is 1, ``/readyz`` fails naming it, ``papayya projections status``
prints it and exits 1, and the event id is logged once however often it retries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner, Result
from prometheus_client import REGISTRY

from eventstore.types import NewEvent
from papayya.domain import events as ev
from projections.runner import PROJECTION_FAILING, ProjectionRunner
from projections.service import Projections, refresh_gauges
from server.cli_projections import projections as projections_cli
from tests.support.api import Api, running_api
from tests.support.bounds import FailingProjector
from web import keys

pytestmark = pytest.mark.timeout(120)

RETRY = 0.05


@pytest.fixture
async def api(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async with running_api(dsn, monkeypatch) as running:
        yield running


def gauge(name: str, projection: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"projection": projection})


async def until(condition: Callable[[], Any], seconds: float = 30.0) -> None:
    """Wait for ``condition()`` (sync or async) to hold; fail the test if it never does."""
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def readyz(api: Api) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{api.url}/readyz") as resp:
        return resp.status, await resp.json()


async def status_cli(dsn: str) -> Result:
    runner = CliRunner()
    env = {"PAPAYYA_DATABASE_URL": dsn}
    return await asyncio.to_thread(runner.invoke, projections_cli, ["status"], env=env)


def logged(caplog: pytest.LogCaptureFixture, *needles: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "projections.runner" and all(n in r.getMessage() for n in needles)
    ]


async def healthy_run(api: Api, run_id: str) -> None:
    project = str(await api.app[keys.STORE].pool.fetchval("SELECT project_id FROM projects"))
    runs = api.app[keys.RUNS]
    state = await runs.queue(ev.RunQueued(run_id=run_id, project_id=project, agent_id="a"))
    await runs.append(state, [ev.RunStarted(attempt=1)])


async def test_an_event_the_projectors_cannot_handle_shows_everywhere_and_is_logged_once(
    api: Api, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.runner")
    store = api.app[keys.STORE]
    await healthy_run(api, "before")
    # Written straight to the store, past the domain's checks, as old code or a bug could.
    poison = NewEvent(
        type="RunQueued",
        data={"run_id": "poison", "project_id": "p", "agent_id": "a", "budget_micro_usd": 10**23},
    )
    await store.append("run-poison", [poison], "no_stream")
    event_id = str(await store.pool.fetchval("SELECT event_id FROM events WHERE stream_id = $1",
                                             "run-poison"))  # fmt: skip
    await store.wait_visible()
    service = Projections(store, dsn, retry_interval=RETRY, poll_interval=RETRY)
    task = asyncio.create_task(service.run())
    try:
        runners = list(service.runners.values())
        await until(lambda: all(r.failures >= 5 for r in runners))
        # The events before it went through, one at a time once a batch had failed.
        assert await store.pool.fetchval("SELECT count(*) FROM runs WHERE run_id = 'before'")

        for name in service.runners:
            assert gauge("papayya_projection_failing", name) == 1
        first = gauge("papayya_projection_lag_seconds", "runs")
        assert first is not None and first > 0
        seen = runners[0].failures
        await until(lambda: runners[0].failures >= seen + 3)
        later = gauge("papayya_projection_lag_seconds", "runs")
        assert later is not None and later > first  # the lag grows while it is stuck

        # A /metrics served by a process that does not run the projectors reads the rows.
        PROJECTION_FAILING.labels("runs").set(0)
        await refresh_gauges(store.pool)
        assert gauge("papayya_projection_failing", "runs") == 1

        status, body = await readyz(api)
        assert status == 503, body
        assert body["error"]["code"] == "projection_failing"
        for name in ("runs", "costs", event_id):
            assert name in body["error"]["message"], body
        assert "InvalidEvent" not in body["error"]["message"]  # the why is for the operator

        result = await status_cli(dsn)
        assert result.exit_code == 1, result.output
        failing = [line for line in result.output.splitlines() if "FAILING" in line]
        assert len(failing) == 2 and all(event_id in line for line in failing), result.output
        assert all("InvalidEvent" in line for line in failing)  # the operator sees why

        for name in service.runners:
            assert len(logged(caplog, name, event_id)) == 1, [
                r.getMessage() for r in logged(caplog, name)
            ]
    finally:
        service.stop()
        await asyncio.wait_for(task, 10)


async def test_the_failing_event_of_a_batch_is_named_and_a_recovery_clears_every_sign(
    api: Api, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="projections.runner")
    store = api.app[keys.STORE]
    await healthy_run(api, "r1")
    await store.wait_visible()
    rows = await store.pool.fetch("SELECT event_id FROM events ORDER BY global_position")
    ids = [row["event_id"] for row in rows]
    probe = FailingProjector(store)
    probe.poison = {ids[-1]}  # the second event of the batch
    runner = ProjectionRunner(store, probe, dsn, retry_interval=RETRY, poll_interval=RETRY)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: runner.failures >= 4)
        failing = await store.pool.fetchrow(
            "SELECT failing_event_id FROM projection_checkpoints WHERE name = $1", probe.name
        )
        assert failing is not None and failing["failing_event_id"] == ids[-1]
        assert runner.processed == len(ids) - 1  # what came before it was committed
        status, body = await readyz(api)
        assert status == 503 and probe.name in body["error"]["message"], body
        assert gauge("papayya_projection_failing", probe.name) == 1

        probe.poison.clear()  # a fixed projector: the next retry gets past it

        async def cleared() -> bool:
            row = await store.pool.fetchrow(
                "SELECT failing_since FROM projection_checkpoints WHERE name = $1", probe.name
            )
            return row is not None and row["failing_since"] is None

        await until(cleared)
        assert runner.processed == len(ids)
        assert gauge("papayya_projection_failing", probe.name) == 0
        status, body = await readyz(api)
        assert status == 200, body
        assert len(logged(caplog, probe.name, str(ids[-1]))) == 1
        assert len(logged(caplog, probe.name, "is past")) == 1
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
