"""Spend over time and the costliest runs of a project, from the projected ``costs`` and
``runs`` tables (so they reflect the events up to the projectors' lag)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Final

import asyncpg
import msgspec

from papayya.money import cents_up, usd_string
from sql import queries

Q: Final = queries("dashboard.sql")


class CostlyRun(msgspec.Struct, kw_only=True):
    id: str
    agent_id: str
    status: str
    trigger: str
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: int
    cost_usd: str
    budget_cents: int | None
    created_at: datetime
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> CostlyRun:
        micro = int(row["total_cost_micro_usd"])
        budget = row["budget_micro_usd"]
        return cls(
            id=row["run_id"],
            agent_id=row["agent_id"],
            status=row["status"],
            trigger=row["trigger"],
            total_input_tokens=int(row["total_input_tokens"]),
            total_output_tokens=int(row["total_output_tokens"]),
            total_cost_cents=cents_up(micro),
            cost_usd=usd_string(micro),
            budget_cents=None if budget is None else cents_up(budget),
            created_at=row["created_at"],
            completed_at=row["completed_at"],
        )


class Spend:
    """It reads projected tables only (no appends), so it takes the pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def by_day(self, project_id: str, start: date, to: date) -> dict[date, dict[str, Any]]:
        """The project's model spend per UTC day over ``start..to`` (both included), by
        day; days without spend are absent."""
        rows = await self.pool.fetch(Q["spend_by_day"], project_id, start, to)
        return {row["day"]: dict(row) for row in rows}

    async def costliest(
        self, project_id: str, since: datetime, until: datetime, limit: int | None
    ) -> list[CostlyRun]:
        """Runs created in ``[since, until)`` that cost something, costliest first (at most
        ``limit``; ``None`` is no limit)."""
        rows = await self.pool.fetch(Q["costliest_runs"], project_id, since, until, limit)
        return [CostlyRun.from_row(r) for r in rows]
