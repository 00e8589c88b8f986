"""Dashboard aggregates over the projected tables."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from projections import Projections
from projections.dashboard import Durations, Spend, dashboard
from tests.support.projections import append_run, simple_run

TODAY = datetime.now(UTC).date()
NOON = datetime.combine(TODAY, time(12), UTC)  # far from midnight whenever the test runs


def timed(run_id: str, seconds: int, cost: int, days_ago: int = 0) -> list[Any]:
    """A finished run that took ``seconds`` and whose one call cost ``cost``."""
    start = NOON - timedelta(days=days_ago)
    events = simple_run(run_id, calls=1, cost=cost)
    moments = {ev.RunQueued: start, ev.RunStarted: start, ev.LlmCallRecorded: start}
    moments[ev.RunCompleted] = start + timedelta(seconds=seconds)
    return [
        msgspec.structs.replace(e, at=moments[type(e)]) if type(e) in moments else e for e in events
    ]


async def test_dashboard_for_a_project(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn)
    try:
        for i, seconds in enumerate([1, 2, 3, 4, 100]):
            await append_run(store, f"done{i}", timed(f"done{i}", seconds, cost=10))
        await append_run(store, "old", timed("old", 5, cost=1000, days_ago=3))
        await append_run(store, "ancient", timed("ancient", 5, cost=5000, days_ago=9))
        await append_run(store, "waiting", simple_run("waiting", calls=0)[:1])
        other = simple_run("other", calls=1, cost=99)
        other[0] = msgspec.structs.replace(other[0], project_id="elsewhere")
        await append_run(store, "other", other)
        await Projections(store, dsn).catch_up()
        conn = await asyncpg.connect(dsn)
        try:
            board = await dashboard(conn, "proj", today=TODAY)
        finally:
            await conn.close()
        assert board.runs_by_status == {"completed": 7, "queued": 1}
        assert board.spend == Spend(today_micro_usd=50, last_7_days_micro_usd=1050)
        # Runs created in the last seven days: 1, 2, 3, 4, 5 and 100 seconds.
        assert board.durations.p50_ms == pytest.approx(3500)
        assert board.durations.p95_ms == pytest.approx(76_250)
        empty = await dashboard(store.pool, "nobody")
        assert empty.durations == Durations(None, None)
        assert empty.spend == Spend(0, 0) and empty.runs_by_status == {}
    finally:
        await store.close()
