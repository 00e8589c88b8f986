"""The projector runner: rows that match the fold, checkpoints that commit with the rows,
one leader per projector, live wake-ups and a graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date

import asyncpg
import pytest
from prometheus_client import REGISTRY

from eventstore import Cursor, PostgresEventStore
from eventstore.types import START
from papayya.domain import events as ev
from projections import CostsProjector, Envelope, ProjectionRunner, Projections, RunsProjector
from tests.support.projections import append_run, eventually, simple_run, snapshot


@pytest.fixture
async def store(dsn: str) -> PostgresEventStore:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    yield store  # type: ignore[misc]
    await store.close()


async def checkpoint(dsn: str, name: str) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        value: str | None = await conn.fetchval(
            "SELECT cursor FROM projection_checkpoints WHERE name = $1", name
        )
        return value
    finally:
        await conn.close()


async def test_rows_follow_the_fold(store: PostgresEventStore, dsn: str) -> None:
    await append_run(store, "a", simple_run("a", calls=2)[:4])  # queued, started, step, call
    service = Projections(store, dsn)
    assert await service.catch_up() == {"runs": 4, "costs": 4}
    await append_run(store, "a", simple_run("a", calls=2)[4:])
    await store.append(
        "agent-x",
        [ev.to_new_event(ev.AgentDefined(agent_id="x", project_id="proj", name="X", slug="x"))],
    )  # another category: skipped
    assert await service.catch_up() == {"runs": 3, "costs": 3}
    tables = await snapshot(dsn)
    run = tables["runs"][0]
    assert (run["run_id"], run["status"], run["current_step"], run["version"]) == (
        "a",
        "completed",
        1,
        7,
    )
    assert run["total_input_tokens"] == 240 and run["total_cached_tokens"] == 40
    assert run["total_output_tokens"] == 14 and run["total_cost_micro_usd"] == 20
    assert run["output"] == '{"answer": 42}' and run["started_at"] <= run["completed_at"]
    [step] = tables["steps"]
    assert (step["status"], step["model"], step["cost_micro_usd"], step["tool_calls"]) == (
        "completed",
        "gpt-x",
        20,
        "[]",
    )
    [cost] = tables["costs"]
    assert (cost["project_id"], cost["agent_id"], cost["model"], cost["calls"]) == (
        "proj",
        "agent",
        "gpt-x",
        2,
    )
    assert isinstance(cost["day"], date) and cost["cost_micro_usd"] == 20
    assert await service.catch_up() == {"runs": 0, "costs": 0}


async def test_catch_up_until_waits_for_an_append_to_become_visible(
    store: PostgresEventStore, dsn: str
) -> None:
    holder = await asyncpg.connect(dsn)
    try:
        held = holder.transaction()
        await held.start()
        await holder.fetchval("SELECT pg_current_xact_id()")  # an older open transaction
        events = [ev.to_new_event(e) for e in simple_run("hidden", calls=1)]
        appended = await store.append("run-hidden", events)
        service = Projections(store, dsn)
        assert await service.catch_up() == {"runs": 0, "costs": 0}  # committed, not visible
        asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(held.commit()))
        assert await service.catch_up(until=appended.cursor) == {"runs": 6, "costs": 6}
    finally:
        await holder.close()


class FailingCosts(CostsProjector):
    """Writes its rows, then fails before the transaction can commit."""

    fail = True

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        await super().handle(conn, batch)
        if self.fail:
            raise RuntimeError("crash after writing")


async def test_a_failed_batch_leaves_rows_and_checkpoint_untouched(
    store: PostgresEventStore, dsn: str
) -> None:
    projector = FailingCosts(store)
    projector.fail = False
    runner = ProjectionRunner(store, projector, dsn, batch_size=3)
    await append_run(store, "a", simple_run("a", calls=3))
    await runner.catch_up()
    done = await checkpoint(dsn, "costs")
    await append_run(store, "b", simple_run("b", calls=4))
    projector.fail = True
    with pytest.raises(RuntimeError, match="crash after writing"):
        await runner.catch_up()
    assert await checkpoint(dsn, "costs") == done
    assert [r["calls"] for r in (await snapshot(dsn))["costs"]] == [3]
    projector.fail = False
    assert await runner.catch_up() == 9
    [row] = (await snapshot(dsn))["costs"]
    assert (row["calls"], row["cost_micro_usd"], row["input_tokens"]) == (7, 70, 840)
    assert Cursor.parse(await checkpoint(dsn, "costs")) > Cursor.parse(done)


async def test_first_failure_keeps_the_initial_checkpoint(
    store: PostgresEventStore, dsn: str
) -> None:
    runner = ProjectionRunner(store, FailingCosts(store), dsn)
    await append_run(store, "a", simple_run("a", calls=1))
    with pytest.raises(RuntimeError):
        await runner.catch_up()
    assert await checkpoint(dsn, "costs") == str(START)
    assert (await snapshot(dsn))["costs"] == []


async def test_one_leader_and_takeover_when_its_session_dies(
    store: PostgresEventStore, dsn: str, admin_dsn: str
) -> None:
    # The first runner polls rarely, so it only notices its dead session when events come.
    first = ProjectionRunner(store, CostsProjector(store), dsn, poll_interval=30)
    second = ProjectionRunner(
        store, CostsProjector(store), dsn, poll_interval=0.05, retry_interval=0.05
    )
    first_task = asyncio.create_task(first.run())
    await eventually(lambda: first.is_leader)
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(0.3)
    assert first.is_leader and not second.is_leader
    for i in range(3):
        await append_run(store, f"a{i}", simple_run(f"a{i}", calls=2))
    await eventually(lambda: first.processed == 3 * 7)
    assert second.processed == 0

    admin = await asyncpg.connect(admin_dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first.lock_backend_pid())
    finally:
        await admin.close()
    await eventually(lambda: second.is_leader)
    for i in range(2):
        await append_run(store, f"b{i}", simple_run(f"b{i}", calls=2))
    await eventually(lambda: second.processed == 2 * 7)
    await eventually(lambda: not first.is_leader)
    assert first.processed == 3 * 7

    first.stop()
    second.stop()
    await asyncio.wait_for(asyncio.gather(first_task, second_task), 10)
    [row] = (await snapshot(dsn))["costs"]
    assert row["calls"] == 10 and row["cost_micro_usd"] == 100


async def test_a_lone_runner_leads_again_after_losing_its_session(
    store: PostgresEventStore, dsn: str, admin_dsn: str
) -> None:
    runner = ProjectionRunner(
        store, RunsProjector(store), dsn, poll_interval=30, retry_interval=0.05
    )
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.is_leader)
    pid = runner.lock_backend_pid()
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    # No event and no poll for 30 s: the session's termination itself wakes the runner.
    await eventually(lambda: runner.is_leader and runner.lock_backend_pid() != pid, within=5)
    await append_run(store, "after", simple_run("after", calls=1))
    await eventually(lambda: runner.processed == 6, within=5)
    runner.stop()
    await asyncio.wait_for(task, 5)


async def test_live_runner_follows_appends_and_stops_gracefully(
    store: PostgresEventStore, dsn: str
) -> None:
    runner = ProjectionRunner(store, RunsProjector(store), dsn, poll_interval=30)
    task = asyncio.create_task(runner.run())
    await eventually(lambda: runner.is_leader)
    await append_run(store, "live", simple_run("live", calls=1))
    # The poll is 30 s away: only the subscription can have woken the runner this fast.
    await eventually(lambda: runner.processed == 6, within=5)
    runner.stop()
    await asyncio.wait_for(task, 5)
    assert not runner.is_leader
    assert (await snapshot(dsn))["runs"][0]["status"] == "completed"


def lag(name: str) -> float | None:
    return REGISTRY.get_sample_value("papayya_projection_lag_seconds", {"projection": name})


class GaugeReadingRuns(RunsProjector):
    """Records the lag gauge as each batch starts (the runner sets it after each batch)."""

    seen: list[float | None]

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        self.seen.append(lag("runs"))
        await super().handle(conn, batch)


async def test_lag_gauge_is_set_while_behind_and_zero_when_caught_up(
    store: PostgresEventStore, dsn: str
) -> None:
    projector = GaugeReadingRuns(store)
    projector.seen = []
    runner = ProjectionRunner(store, projector, dsn, batch_size=2)
    await append_run(store, "a", simple_run("a", calls=3))
    await asyncio.sleep(0.05)
    await runner.catch_up()
    assert len(projector.seen) == 4  # 7 events in pages of 2
    assert all(value is not None and value >= 0.05 for value in projector.seen[1:])
    assert lag("runs") == 0
