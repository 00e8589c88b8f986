"""Cron schedules and their fires. The API's calls are scoped to one project; the scheduler
works across projects, one claimed (locked) schedule at a time (``Schedules.claim_due``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from papayya.errors import InvalidInput, NotFound
from papayya.readmodels import Conn, Db, Repository
from papayya.triggers.policy import CatchupPolicy, OverlapPolicy
from papayya.triggers.zone import CronSchedule
from sql import queries

Q: Final = queries("triggers.sql")
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    """A ``schedules`` row."""

    schedule_id: str
    project_id: str
    agent_id: str
    cron_expression: str
    timezone: str
    input: Any
    max_steps: int | None
    budget_cents: int | None
    overlap_policy: OverlapPolicy
    catchup_policy: CatchupPolicy
    enabled: bool
    next_fire_at: datetime
    last_fire_at: datetime | None
    last_run_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Schedule:
        data = dict(row)
        raw = data.pop("input")
        return cls(input=None if raw is None else _decode(raw), **data)

    @property
    def cron(self) -> CronSchedule:
        return CronSchedule(self.cron_expression, self.timezone)


class FireOut(msgspec.Struct):
    """A fire: ``started`` with its run, or ``skipped`` with a ``reason`` (``missed``: due
    while no scheduler ran; ``overlap``: the previous run was still going; ``error``: the
    run could not be queued) and a ``detail``."""

    fire_at: datetime
    status: str
    run_id: str | None
    reason: str | None
    detail: str | None
    recorded_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> FireOut:
        return cls(
            row["fire_at"], row["status"], row["run_id"], row["reason"], row["detail"],
            row["recorded_at"],
        )  # fmt: skip


def input_json(value: Any) -> str | None:
    """A run input as the JSON a schedule stores; ``InvalidInput`` for a NUL character."""
    if value is None:
        return None
    raw = _encode(value)
    if b"\\u0000" in raw:
        raise InvalidInput("input contains a NUL character, which Postgres cannot hold")
    return raw.decode()


def _values(s: Schedule) -> tuple[Any, ...]:
    """The columns ``insert_schedule`` and ``update_schedule`` take after the key ($3...)."""
    return (
        s.cron_expression, s.timezone, input_json(s.input), s.max_steps, s.budget_cents,
        s.overlap_policy, s.catchup_policy, s.enabled, s.next_fire_at,
    )  # fmt: skip


async def _find(db: Db, project_id: str, schedule_id: str, lock: bool = False) -> Schedule:
    row = await db.fetchrow(Q["lock_schedule" if lock else "schedule"], project_id, schedule_id)
    if row is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return Schedule.from_row(row)


class Claimed:
    """A due schedule, locked for the scheduler's transaction: what its fires did, and where
    it goes next, are written on that transaction."""

    def __init__(self, conn: Conn, schedule: Schedule) -> None:
        self.conn = conn
        self.schedule = schedule

    async def record_fire(
        self, fire_at: datetime, status: str, run_id: str | None, reason: str | None,
        detail: str | None,
    ) -> None:  # fmt: skip
        """Record a fire once (a fire recorded before is left as it is)."""
        s = self.schedule
        await self.conn.execute(
            Q["insert_fire"], s.schedule_id, fire_at, s.project_id, status, run_id, reason, detail
        )

    async def advance(
        self, next_fire_at: datetime, last_fire_at: datetime | None, last_run_id: str | None
    ) -> None:
        await self.conn.execute(
            Q["advance_schedule"], self.schedule.schedule_id, next_fire_at, last_fire_at,
            last_run_id,
        )  # fmt: skip

    async def disable(self) -> None:
        """Pause a schedule that cannot fire any more."""
        await self.conn.execute(Q["disable_schedule"], self.schedule.schedule_id)


class Schedules(Repository):
    async def find(self, project_id: str, schedule_id: str) -> Schedule:
        return await _find(self.pool, project_id, schedule_id)

    async def create(self, schedule: Schedule) -> Schedule:
        row = await self.pool.fetchrow(
            Q["insert_schedule"], schedule.project_id, schedule.schedule_id, schedule.agent_id,
            *_values(schedule), schedule.created_at,
        )  # fmt: skip
        assert row is not None  # INSERT … RETURNING
        return Schedule.from_row(row)

    async def page(
        self,
        project_id: str,
        agent_id: str | None,
        after: tuple[datetime | None, str | None],
        limit: int,
    ) -> list[Schedule]:
        """Up to ``limit`` schedules (of one agent, or all), newest first, after the
        ``(created_at, id)`` of the previous page's last one."""
        rows = await self.pool.fetch(Q["list_schedules"], project_id, agent_id, *after, limit)
        return [Schedule.from_row(r) for r in rows]

    async def update(
        self,
        project_id: str,
        schedule_id: str,
        change: Callable[[Schedule], Awaitable[Schedule]],
    ) -> Schedule:
        """Write what ``change`` makes of the schedule, with the row locked meanwhile: a
        scheduler firing it finishes first, and then sees the change."""
        async with self.transaction() as conn:
            current = await _find(conn, project_id, schedule_id, lock=True)
            changed = await change(current)
            row = await conn.fetchrow(
                Q["update_schedule"], project_id, schedule_id, *_values(changed),
                changed.updated_at,
            )  # fmt: skip
            assert row is not None  # the row is locked: it is still there
        return Schedule.from_row(row)

    async def delete(self, project_id: str, schedule_id: str) -> Schedule:
        """Delete the schedule and its fires; the schedule as it was."""
        row = await self.pool.fetchrow(Q["delete_schedule"], project_id, schedule_id)
        if row is None:
            raise NotFound(f"schedule {schedule_id} not found")
        return Schedule.from_row(row)

    async def fires(
        self, project_id: str, schedule_id: str, before: datetime | None, limit: int
    ) -> list[FireOut]:
        """Up to ``limit`` fires of the schedule, newest first, before ``before``."""
        await _find(self.pool, project_id, schedule_id)
        rows = await self.pool.fetch(Q["list_fires"], project_id, schedule_id, before, limit)
        return [FireOut.from_row(r) for r in rows]

    # -- the scheduler (every project) ----------------------------------------------------

    async def next_due(self) -> datetime | None:
        """The earliest moment an enabled schedule is due."""
        due: datetime | None = await self.pool.fetchval(Q["next_due"])
        return due

    @asynccontextmanager
    async def claim_due(self, now: datetime) -> AsyncIterator[Claimed | None]:
        """One schedule due at ``now``, locked for a transaction that lasts the block (a
        second scheduler skips it and takes another); ``None`` when none is due."""
        async with self.transaction() as conn:
            row = await conn.fetchrow(Q["claim_due_schedule"], now)
            yield None if row is None else Claimed(conn, Schedule.from_row(row))
