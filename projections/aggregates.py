"""Aggregates of the runs that the runs projector keeps as it folds them: runs per status
(``run_counts``), runs created per day (``run_days``), runs created and ended per minute
(``run_minutes``) and the durations of the runs that ended per minute (``run_durations``).

A run's contribution is a function of its folded state. For each run a batch changes, the
projector adds the contribution of the state after the batch and takes back that of the state
before it, so a run that moves (running -> completed, budget_exceeded -> resumed -> completed)
moves between rows and is counted once. The contributions mirror the queries these tables
replace: a run is created in the minute and UTC day of ``queued_at``, and ends in the minute of
``completed_at`` while its status is terminal.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from papayya.domain.state import TERMINAL, RunState
from projections.sketch import bin_of

if TYPE_CHECKING:
    from projections.projector import Projector

TABLES: Final = ("run_counts", "run_days", "run_minutes", "run_durations")
# The columns of run_minutes after ``created``, in order.
ENDED: Final = ("completed", "failed", "cancelled", "budget_exceeded")


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


class Tally:
    """The changes a batch makes to the aggregate tables, summed before they are written."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.days: defaultdict[tuple[str, str, date], int] = defaultdict(int)
        self.minutes: defaultdict[tuple[str, datetime], list[int]] = defaultdict(
            lambda: [0] * (1 + len(ENDED))
        )
        self.durations: defaultdict[tuple[str, datetime, int], int] = defaultdict(int)

    def move(self, before: RunState | None, after: RunState) -> None:
        """Take back ``before``'s contribution and add ``after``'s."""
        if before is not None:
            self._add(before, -1)
        self._add(after, 1)

    def _add(self, run: RunState, sign: int) -> None:
        project = run.project_id
        self.counts[(project, run.agent_id, run.status)] += sign
        if run.queued_at is not None:  # always set once the store has dated the RunQueued
            self.days[(project, run.agent_id, day_of(run.queued_at))] += sign
            self.minutes[(project, minute_of(run.queued_at))][0] += sign
        if run.status in TERMINAL and run.completed_at is not None:
            minute = minute_of(run.completed_at)
            self.minutes[(project, minute)][1 + ENDED.index(run.status)] += sign
            if run.started_at is not None:
                ms = (run.completed_at - run.started_at).total_seconds() * 1000
                self.durations[(project, minute, bin_of(ms))] += sign

    async def write(self, conn: asyncpg.Connection, projector: Projector) -> None:
        """Add the changes on ``conn`` (in the batch's transaction), one statement per table,
        deleting the rows that reach zero; changes that cancel out within the batch write
        nothing."""
        counts = {k: v for k, v in self.counts.items() if v}
        days = {k: v for k, v in self.days.items() if v}
        minutes = {k: v for k, v in self.minutes.items() if any(v)}
        durations = {k: v for k, v in self.durations.items() if v}
        if counts:
            await _apply(conn, projector, "run_counts", 3, counts)
        if days:
            await _apply(conn, projector, "run_days", 3, days)
        if minutes:
            keys = list(minutes)
            columns = [[k[i] for k in keys] for i in range(2)]
            sums = [[minutes[k][i] for k in keys] for i in range(1 + len(ENDED))]
            await conn.execute(projector.sql("add_run_minutes"), *columns, *sums)
        if durations:
            await _apply(conn, projector, "run_durations", 3, durations)


async def _apply(
    conn: asyncpg.Connection,
    projector: Projector,
    table: str,
    width: int,
    changes: dict[Any, int],
) -> None:
    keys = list(changes)
    columns = [[k[i] for k in keys] for i in range(width)]
    await conn.execute(projector.sql(f"add_{table}"), *columns, list(changes.values()))
