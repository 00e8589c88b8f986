"""Dashboard aggregates of one project, read from the projected tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final

import asyncpg
import msgspec

from sql import queries

Q: Final = queries("projections.sql")
DURATION_WINDOW_DAYS: Final = 7

Executor = asyncpg.Pool | asyncpg.Connection


class Spend(msgspec.Struct, frozen=True):
    """Model spend in micro-USD: today and the seven UTC days ending today."""

    today_micro_usd: int
    last_7_days_micro_usd: int


class Durations(msgspec.Struct, frozen=True):
    """Run durations (start to end) in milliseconds; None when no run has finished."""

    p50_ms: float | None
    p95_ms: float | None


class Dashboard(msgspec.Struct, frozen=True):
    runs_by_status: dict[str, int]
    durations: Durations
    spend: Spend


def _today(today: date | None) -> date:
    return today if today is not None else datetime.now(UTC).date()


async def runs_by_status(db: Executor, project_id: str) -> dict[str, int]:
    rows = await db.fetch(Q["runs_by_status"], project_id)
    return {row["status"]: row["runs"] for row in rows}


async def run_durations(db: Executor, project_id: str, since: datetime) -> Durations:
    """p50 and p95 of the durations of runs created since ``since`` that have finished."""
    percentiles = await db.fetchval(Q["run_duration_percentiles"], project_id, since)
    if percentiles is None:
        return Durations(None, None)
    return Durations(percentiles[0], percentiles[1])


async def spend(db: Executor, project_id: str, today: date | None = None) -> Spend:
    row = await db.fetchrow(Q["spend"], project_id, _today(today))
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return Spend(int(row["today"]), int(row["last_7_days"]))  # numeric sums: exact ints


async def dashboard(db: Executor, project_id: str, today: date | None = None) -> Dashboard:
    """Runs per status (all time), durations of the last seven days' runs, and spend."""
    day = _today(today)
    since = datetime.combine(day - timedelta(days=DURATION_WINDOW_DAYS - 1), time(), UTC)
    return Dashboard(
        await runs_by_status(db, project_id),
        await run_durations(db, project_id, since),
        await spend(db, project_id, day),
    )
