"""Rebuilding a projection from zero gives what incremental processing gave, and the swap
keeps the schema and the live runner's exactly-once effect."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from papayya.errors import ProjectionNotFound, RebuildInProgress
from projections import Projections
from tests.support.aggregates import aggregates_of, expected_aggregates
from tests.support.catalog import CATALOG
from tests.support.projections import (
    append_run,
    expected_state,
    owned,
    simple_run,
    snapshot,
    stored_form,
)
from tests.support.strategies import legal_runs

runs_strategy = st.lists(legal_runs(max_events=30), min_size=1, max_size=5)


def on_day(events: list[Any], days_ago: int) -> list[Any]:
    """Date the model calls ``days_ago`` days back, so costs spread over several days."""
    at = datetime.now(UTC) - timedelta(days=days_ago)
    return [
        msgspec.structs.replace(e, at=at) if isinstance(e, ev.LlmCallRecorded) else e
        for e in events
    ]


@pytest.mark.slow
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(runs=runs_strategy, data=st.data())
async def test_rebuild_equals_incremental(
    dsn: str, runs: list[tuple[list[ev.RunEvent], Any]], data: st.DataObject
) -> None:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05, notify=False)
    try:
        service = Projections(store, dsn, batch_size=data.draw(st.integers(1, 20)))
        prefix = uuid.uuid4().hex[:8]
        # Each run is appended in chunks; the chunks of all runs interleave at random.
        chunks: dict[int, list[list[Any]]] = {}
        stored: dict[str, list[Any]] = {}
        for i, (events, _) in enumerate(runs):
            events = on_day(owned(events, f"{prefix}-{i}", f"p{i % 2}", f"a{i % 3}"), i % 3)
            cuts = sorted(data.draw(st.sets(st.integers(1, len(events)), max_size=3)))
            bounds = [0, *[c for c in cuts if c < len(events)], len(events)]
            chunks[i] = [events[a:b] for a, b in itertools.pairwise(bounds)]
            stored[f"{prefix}-{i}"] = []
        order = data.draw(st.permutations([i for i, parts in chunks.items() for _ in parts]))
        for i in order:
            run_id = f"{prefix}-{i}"
            stored[run_id] += await append_run(store, run_id, chunks[i].pop(0))
            if data.draw(st.booleans()):
                await service.catch_up()
        await service.catch_up()
        incremental = await snapshot(dsn)
        await service.rebuild()
        rebuilt = await snapshot(dsn)
        assert rebuilt == incremental
        await check_against_fold(incremental, stored)
    finally:
        await store.close()


async def check_against_fold(tables: dict[str, list[dict[str, Any]]], stored: Any) -> None:
    rows = {r["run_id"]: r for r in tables["runs"]}
    for run_id, events in stored.items():
        state = expected_state(events)
        row = rows[run_id]
        assert (row["status"], row["current_step"], row["version"]) == (
            state.status,
            state.next_step,
            len(events),
        )
        assert row["total_cost_micro_usd"] == state.usage.cost_micro_usd
    by_project: dict[str, int] = {}
    for row in tables["runs"]:
        by_project[row["project_id"]] = (
            by_project.get(row["project_id"], 0) + row["total_cost_micro_usd"]
        )
    costs: dict[str, int] = {}
    for row in tables["costs"]:
        costs[row["project_id"]] = costs.get(row["project_id"], 0) + row["cost_micro_usd"]
    assert {k: v for k, v in by_project.items() if v} == {k: v for k, v in costs.items() if v}
    # The aggregates kept run by run are what grouping the final runs rows gives.
    assert aggregates_of(tables) == expected_aggregates(tables["runs"])


async def catalog_of_read_tables(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {k: [tuple(r) for r in await conn.fetch(q)] for k, q in CATALOG.items()}
    finally:
        await conn.close()


async def test_rebuild_swaps_tables_keeping_names_and_checkpoint(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    try:
        service = Projections(store, dsn)
        for i in range(5):
            await append_run(store, f"r{i}", simple_run(f"r{i}", calls=i + 1))
        await service.catch_up()
        before_tables, before_catalog = await snapshot(dsn), await catalog_of_read_tables(dsn)
        results = await service.rebuild("costs")
        assert [(r.name, r.events) for r in results] == [("costs", sum(i + 6 for i in range(5)))]
        results = await service.rebuild()
        assert [r.name for r in results] == ["runs", "costs"]
        assert await snapshot(dsn) == before_tables
        assert await catalog_of_read_tables(dsn) == before_catalog
        conn = await asyncpg.connect(dsn)
        try:
            shadows = await conn.fetchval(
                "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_\\_shadow%'"
            )
            checkpoints = dict(await conn.fetch("SELECT name, cursor FROM projection_checkpoints"))
        finally:
            await conn.close()
        assert shadows == 0
        assert checkpoints == {r.name: r.cursor for r in results}
        # After the swap the runner continues from the new checkpoint without double counting.
        await append_run(store, "late", simple_run("late", calls=2))
        assert await service.catch_up() == {"runs": 7, "costs": 7}
        total = (await snapshot(dsn))["costs"][0]["cost_micro_usd"]
        assert total == 10 * (sum(range(1, 6)) + 2)
    finally:
        await store.close()


async def test_rebuild_while_live_runner_runs_counts_every_call_once(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    try:
        live = Projections(store, dsn, poll_interval=0.05, retry_interval=0.05)
        task = asyncio.create_task(live.run())
        written = 0

        async def write(count: int) -> None:
            nonlocal written
            for _ in range(count):
                await append_run(store, f"w{written}", simple_run(f"w{written}", calls=3))
                written += 1
                await asyncio.sleep(0.002)

        writer = asyncio.create_task(write(60))
        await asyncio.sleep(0.05)
        for _ in range(3):
            await live.rebuild()
        await writer
        live.stop()
        await asyncio.wait_for(task, 10)
        await store.wait_visible()  # the fence also waits for other sessions' transactions
        # A stopped runner leads no more: a fresh one processes what the live one had not.
        await Projections(store, dsn).catch_up()
        tables = await snapshot(dsn)
        assert len(tables["runs"]) == written
        assert sum(r["calls"] for r in tables["costs"]) == 3 * written
        assert sum(r["cost_micro_usd"] for r in tables["costs"]) == 30 * written
        assert all(r["status"] == "completed" for r in tables["runs"])
    finally:
        await store.close()


async def test_rebuild_refuses_a_second_concurrent_rebuild_and_unknown_names(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn)
    try:
        service = Projections(store, dsn)
        holder = await asyncpg.connect(dsn)
        try:
            await holder.fetchval("SELECT pg_advisory_lock(7293, hashtext('runs'))")
            with pytest.raises(RebuildInProgress):
                await service.rebuild("runs")
        finally:
            await holder.close()
        with pytest.raises(ProjectionNotFound, match="known: runs, costs"):
            await service.rebuild("nope")
        assert [r.name for r in await service.rebuild("runs")] == ["runs"]
    finally:
        await store.close()


def test_stored_form_drops_nul_characters() -> None:
    queued = ev.RunQueued(run_id="r", project_id="p", agent_id="a", input="a\x00b")
    assert stored_form([queued])[0].data["input"] == "ab"
