"""A scheduler that queues its fires' runs through the queue command: the wiring that
``papayya scheduler`` and ``papayya server`` start, below the HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from eventstore.postgres import PostgresEventStore
from papayya.commands import queue
from papayya.commands.queue import RunOptions
from papayya.readmodels.agents import Agents
from papayya.readmodels.idempotency import IdempotencyKeys
from papayya.readmodels.projects import Projects
from papayya.readmodels.schedules import Schedule
from papayya.runs import Runs
from papayya.triggers.scheduler import Clock, Scheduler, StartRun, fire_key, utcnow


def start_scheduled_run(store: PostgresEventStore) -> StartRun:
    """The scheduler's way to queue a fire's run: ``POST /v1/runs``'s, with
    ``trigger="schedule"`` and the fire's idempotency key."""
    runs = Runs(store)
    keys_ = IdempotencyKeys(store)
    find_agent = Agents(store).find

    find_defaults = Projects(store).defaults

    async def start(schedule: Schedule, fire_at: datetime, run_id: str) -> str:
        options = RunOptions(
            input=schedule.input,
            max_steps=schedule.max_steps,
            budget_cents=schedule.budget_cents,
            idempotency_key=fire_key(schedule.schedule_id, fire_at),
        )
        state, _ = await queue.queue_run(
            runs, keys_, find_agent, schedule.project_id, schedule.agent_id, options,
            trigger="schedule", run_id=run_id, find_defaults=find_defaults,
            trigger_metadata={
                "papayya.schedule_id": schedule.schedule_id,
                "papayya.fire_at": fire_at.astimezone(UTC).isoformat(),
            },
        )  # fmt: skip
        return state.run_id

    return start


@contextlib.asynccontextmanager
async def running_scheduler(
    store: PostgresEventStore, clock: Clock = utcnow
) -> AsyncIterator[Scheduler]:
    """A scheduler firing in the background until the block ends (then it finishes its
    tick). Any number may run against one database."""
    scheduler = Scheduler(store, start_scheduled_run(store), clock=clock)
    task = asyncio.create_task(scheduler.run(), name="scheduler")
    try:
        yield scheduler
    finally:
        scheduler.stop()
        try:
            await asyncio.wait_for(task, 10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
