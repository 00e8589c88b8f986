"""The reporting repository: every aggregate the overview, the usage reports, the cost page
and ``/metrics`` show, read from the tables the projectors keep.

Nothing here scans the runs. Counts, series and spend come from the aggregates
(``run_counts``, ``run_days``, ``run_minutes``, ``costs``: a few rows per agent, model, day or
minute), durations from the merged bins of a DDSketch (``run_durations``), and the costliest
runs a page at a time off an index. Like every read model, they reflect the events up to the
projectors' lag (``papayya_projection_lag_seconds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final, NamedTuple

import asyncpg
import msgspec

from eventstore.postgres import PostgresEventStore
from projections.aggregates import ENDED
from projections.service import refresh_gauges
from projections.sketch import quantiles
from sql import queries

Q: Final = queries("reporting.sql")
PERCENTILES: Final = (0.5, 0.95)

Executor = asyncpg.Pool | asyncpg.Connection


class Spend(msgspec.Struct, frozen=True):
    """Model spend in micro-USD: today and the seven UTC days ending today."""

    today_micro_usd: int
    last_7_days_micro_usd: int


class Unfinished(NamedTuple):
    queued: int
    running: int


class Minutes(NamedTuple):
    """Runs created per minute, and runs ended per minute and terminal status (no zeros)."""

    created: dict[datetime, int]
    ended: dict[datetime, dict[str, int]]


class CostKey(NamedTuple):
    """Where a page of the costliest runs ended: the last run's place in their order."""

    cost_micro_usd: int
    created_at: datetime
    run_id: str


class Reporting:
    """One object owns the reporting queries, as procrastinate's manager owns its domain's."""

    def __init__(self, db: Executor) -> None:
        self.db = db

    @classmethod
    def of(cls, store: PostgresEventStore) -> Reporting:
        return cls(store.pool)

    # -- runs now ---------------------------------------------------------------------------

    async def runs_by_status(self, project_id: str) -> dict[str, int]:
        rows = await self.db.fetch(Q["runs_by_status"], project_id)
        return {row["status"]: row["runs"] for row in rows}

    async def unfinished(self, project_id: str | None = None) -> Unfinished:
        """Queued and running runs of a project, or of every project."""
        if project_id is None:
            row = await self.db.fetchrow(Q["unfinished_runs"])
        else:
            row = await self.db.fetchrow(Q["project_unfinished_runs"], project_id)
        assert row is not None  # an aggregate without GROUP BY returns one row
        return Unfinished(row["queued"], row["running"])

    # -- a recent window ------------------------------------------------------------------

    async def minutes(self, project_id: str, since: datetime) -> Minutes:
        created: dict[datetime, int] = {}
        ended: dict[datetime, dict[str, int]] = {}
        for row in await self.db.fetch(Q["minutes_since"], project_id, since):
            minute = row["minute"].astimezone(UTC)
            if row["created"]:
                created[minute] = row["created"]
            outcomes = {status: row[status] for status in ENDED if row[status]}
            if outcomes:
                ended[minute] = outcomes
        return Minutes(created, ended)

    async def durations(
        self, project_id: str, since: datetime, qs: Sequence[float] = PERCENTILES
    ) -> list[float] | None:
        """Percentiles (milliseconds, start to end) of the runs that ended since ``since``,
        within the sketch's relative accuracy; None if none did."""
        rows = await self.db.fetch(Q["duration_bins_since"], project_id, since)
        return quantiles(((row["bin"], row["runs"]) for row in rows), qs)

    async def spend(self, project_id: str, today: date | None = None) -> Spend:
        day = today if today is not None else datetime.now(UTC).date()
        row = await self.db.fetchrow(Q["spend"], project_id, day)
        assert row is not None  # an aggregate without GROUP BY always returns one row
        return Spend(int(row["today"]), int(row["last_7_days"]))  # numeric sums: exact ints

    # -- ranges of UTC days ---------------------------------------------------------------

    async def usage_totals(self, project_id: str, start: date, to: date) -> asyncpg.Record:
        row = await self.db.fetchrow(Q["usage_totals"], project_id, start, to)
        assert row is not None  # an aggregate without GROUP BY returns one row
        return row

    async def usage_by_agent_model(
        self, project_id: str, start: date, to: date
    ) -> list[asyncpg.Record]:
        return list(await self.db.fetch(Q["usage_by_agent_model"], project_id, start, to))

    async def runs_by_agent(self, project_id: str, start: date, to: date) -> dict[str, int]:
        """Runs created on the days ``start`` to ``to`` (both included), per agent."""
        rows = await self.db.fetch(Q["runs_created_by_agent"], project_id, start, to)
        return {row["agent_id"]: row["runs"] for row in rows}

    async def spend_by_day(self, project_id: str, start: date, to: date) -> list[asyncpg.Record]:
        return list(await self.db.fetch(Q["spend_by_day"], project_id, start, to))

    async def costliest_runs(
        self,
        project_id: str,
        since: datetime,
        until: datetime,
        limit: int,
        after: CostKey | None = None,
    ) -> list[asyncpg.Record]:
        """Runs created in [since, until), costliest first (the latest first among equals),
        starting after ``after``."""
        if after is None:
            return list(await self.db.fetch(Q["costliest_runs"], project_id, since, until, limit))
        return list(
            await self.db.fetch(
                Q["costliest_runs_after"],
                project_id,
                since,
                until,
                limit,
                Decimal(after.cost_micro_usd),
                after.created_at,
                after.run_id,
            )
        )

    # -- the process's gauges -------------------------------------------------------------

    async def agent_exists(self, agent_id: str) -> bool:
        return bool(await self.db.fetchval(Q["agent_exists"], agent_id))

    async def refresh_projection_gauges(self) -> None:
        await refresh_gauges(self.db)
