"""The reporting repository's aggregates of a project, read from the tables the projectors
keep: runs per status, spend, and DDSketch duration percentiles."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import msgspec
import pytest

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from projections import Projections
from projections.reporting import Reporting, Spend
from projections.sketch import RELATIVE_ACCURACY
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


async def test_reporting_for_a_project(dsn: str) -> None:
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
        reporting = Reporting.of(store)
        assert await reporting.runs_by_status("proj") == {"completed": 7, "queued": 1}
        assert await reporting.spend("proj", TODAY) == Spend(50, 1050)
        assert await reporting.unfinished("proj") == (1, 0)
        # Runs that ended in the last seven days took 1, 2, 3, 4, 5 and 100 seconds. The
        # sketch gives the value of the lower rank (3 s, 5 s), within its relative accuracy.
        since = NOON - timedelta(days=6)
        p50, p95 = await reporting.durations("proj", since) or (None, None)
        assert p50 == pytest.approx(3000, rel=RELATIVE_ACCURACY)
        assert p95 == pytest.approx(5000, rel=RELATIVE_ACCURACY)
        everything = await reporting.durations("proj", since - timedelta(days=30), [0, 1])
        assert everything == [
            pytest.approx(1000, rel=RELATIVE_ACCURACY),
            pytest.approx(100_000, rel=RELATIVE_ACCURACY),
        ]
        assert await reporting.durations("nobody", since) is None
        assert await reporting.spend("nobody") == Spend(0, 0)
        assert await reporting.runs_by_status("nobody") == {}
    finally:
        await store.close()
