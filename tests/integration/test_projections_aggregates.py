"""The runs' aggregates move with each run: a run counted as running and then ended moves
between rows, and one that runs out of budget, is resumed and completes ends once. The
migration that adds them fills them with what the projector would have written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from projections import Projections
from projections.aggregates import minute_of
from projections.reporting import Reporting
from sql import MIGRATIONS_DIR
from tests.support.aggregates import aggregates_of, expected_aggregates
from tests.support.projections import append_run, snapshot

T0 = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)  # a minute and a day end in this run


def at(seconds: float, event: Any) -> Any:
    return msgspec.structs.replace(event, at=T0 + timedelta(seconds=seconds))


async def test_a_run_moves_between_rows_and_ends_once(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn)
    try:
        service = Projections(store, dsn)
        reporting = Reporting.of(store)

        async def step(*events: Any) -> dict[str, Any]:
            await append_run(store, "r", list(events))
            await service.catch_up()
            tables = await snapshot(dsn)
            assert aggregates_of(tables) == expected_aggregates(tables["runs"])
            return aggregates_of(tables)

        queued = ev.RunQueued(run_id="r", project_id="p", agent_id="a")
        await step(at(0, queued), at(1, ev.RunStarted(attempt=1)))
        assert await reporting.runs_by_status("p") == {"running": 1}
        assert await reporting.unfinished("p") == (0, 1)

        tables = await step(at(40, ev.BudgetExceeded(limit="usd")))  # the next UTC day
        assert await reporting.runs_by_status("p") == {"budget_exceeded": 1}
        ended = [m for m in tables["run_minutes"] if m["budget_exceeded"]]
        assert [m["minute"] for m in ended] == [minute_of(T0 + timedelta(seconds=40))]
        assert [d["day"] for d in tables["run_days"]] == [T0.date()]  # created once, that day

        tables = await step(at(100, ev.RunResumed(budget_micro_usd=10**6)))
        assert await reporting.runs_by_status("p") == {"queued": 1}
        assert not any(m["budget_exceeded"] for m in tables["run_minutes"])
        assert tables["run_durations"] == []

        tables = await step(at(110, ev.RunStarted(attempt=2)), at(200, ev.RunCompleted()))
        assert await reporting.runs_by_status("p") == {"completed": 1}
        minutes = await reporting.minutes("p", T0 - timedelta(minutes=1))
        assert minutes.created == {minute_of(T0): 1}
        assert minutes.ended == {minute_of(T0 + timedelta(seconds=200)): {"completed": 1}}
        assert sum(row["runs"] for row in tables["run_durations"]) == 1
        # started_at stays the first start: 199 s from the first RunStarted to the end.
        p50 = await reporting.durations("p", T0)
        assert p50 is not None and abs(p50[0] - 199_000) <= 199_000 * 0.01
    finally:
        await store.close()


async def test_the_migration_backfills_what_the_projector_keeps(dsn: str) -> None:
    """Migration 0013 fills the aggregates from the runs rows in SQL; a run that moves later
    must find its contribution where the projector would have put it."""
    store = await PostgresEventStore.connect(dsn)
    try:
        runs: dict[str, list[Any]] = {
            "done": [ev.RunStarted(attempt=1), ev.RunCompleted()],
            "instant": [ev.RunStarted(attempt=1), ev.RunCompleted()],
            "broke": [ev.RunStarted(attempt=1), ev.RunFailed(code="boom")],
            "stopped": [ev.RunCancelled()],
            "broke-budget": [ev.RunStarted(attempt=1), ev.BudgetExceeded()],
            "resumed": [ev.RunStarted(attempt=1), ev.BudgetExceeded(), ev.RunResumed()],
            "busy": [ev.RunStarted(attempt=1)],
            "waiting": [],
        }
        for n, (run_id, rest) in enumerate(runs.items()):
            queued = ev.RunQueued(run_id=run_id, project_id=f"p{n % 2}", agent_id=f"a{n % 3}")
            dated = [at(0, queued)] + [
                at(0 if run_id == "instant" else 7.3 * (i + 1) + n, e) for i, e in enumerate(rest)
            ]
            await append_run(store, run_id, dated)
        await Projections(store, dsn).catch_up()
        kept = aggregates_of(await snapshot(dsn))
        assert kept["run_durations"] and kept["run_minutes"]
        migration = (MIGRATIONS_DIR / "0013_aggregates_reporting.sql").read_text()
        backfill = migration[migration.index("-- Backfill:") :]
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("TRUNCATE run_counts, run_days, run_minutes, run_durations")
            await conn.execute(backfill)
        finally:
            await conn.close()
        assert aggregates_of(await snapshot(dsn)) == kept
    finally:
        await store.close()
