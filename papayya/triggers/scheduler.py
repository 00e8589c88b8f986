"""The scheduler: fires due cron schedules, exactly once each, with any number running.

Each tick takes one due schedule at a time, locked (``FOR UPDATE SKIP LOCKED``) for a
transaction that records its fires and moves ``next_fire_at`` on. Runs are queued on other
connections, so a crash between queueing and commit is possible; that is why the run of a
fire has an id and an idempotency key derived from the schedule id and the fire time: the
fire is redone after the crash and finds its run instead of making another. The fires'
primary key ``(schedule_id, fire_at)`` records each fire once.

The clock is injected, so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import msgspec

from eventstore.postgres import PostgresEventStore
from papayya.domain.state import TERMINAL
from papayya.errors import InvalidInput, PapayyaError, RunNotFound
from papayya.readmodels.schedules import Claimed, Schedule, Schedules
from papayya.runs import Runs, run_stream
from papayya.triggers.policy import DEFAULT_GRACE, plan
from papayya.triggers.zone import CronSchedule

__all__ = ["Fire", "Schedule", "Scheduler", "StartRun", "fire_key", "fire_run_id"]

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
# After a long downtime, fires missed longer ago than this are dropped unrecorded, and at
# most MAX_DUE of the newest are handled (and listed), so a catch-up stays bounded.
CATCHUP_WINDOW: Final = timedelta(days=7)
MAX_DUE: Final = 1000
_RUN_NAMESPACE: Final = uuid.UUID("0b9f3c62-55c4-4d5e-8f0e-4f3a7c2d9e11")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Fire(msgspec.Struct, frozen=True):
    """What became of one fire."""

    schedule_id: str
    fire_at: datetime
    status: str  # started | skipped
    run_id: str | None = None
    reason: str | None = None  # missed | overlap | error
    detail: str | None = None


class StartRun(Protocol):
    """Queue the run of ``schedule``'s fire at ``fire_at`` under ``run_id`` (idempotent on
    the schedule and fire time); returns the id of the run that the fire has."""

    def __call__(self, schedule: Schedule, fire_at: datetime, run_id: str) -> Awaitable[str]: ...


def fire_key(schedule_id: str, fire_at: datetime) -> str:
    """The idempotency key of a fire's run."""
    return f"schedule:{schedule_id}:{fire_at.astimezone(UTC).isoformat()}"


def fire_run_id(schedule_id: str, fire_at: datetime) -> str:
    return "run_" + uuid.uuid5(_RUN_NAMESPACE, fire_key(schedule_id, fire_at)).hex


def due_fires(schedule: Schedule, cron: CronSchedule, now: datetime) -> list[datetime]:
    """The fires from ``next_fire_at`` to ``now``: after a long downtime only those of the
    last CATCHUP_WINDOW (if it has any; if not, the schedule fires rarely and listing all
    its missed fires is cheap), and at most the newest MAX_DUE."""
    first = schedule.next_fire_at
    if now - first > CATCHUP_WINDOW and (recent := cron.next_fire(now - CATCHUP_WINDOW)) <= now:
        first = recent
    if first > now:
        return []
    return ([first, *cron.fires_between(first, now)])[-MAX_DUE:]


class Scheduler:
    """Fires the due schedules of every project; ``tick`` once, or ``run`` until ``stop``."""

    def __init__(
        self,
        store: PostgresEventStore,
        start_run: StartRun,
        *,
        clock: Clock = utcnow,
        poll_interval: float = 1.0,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        self.store = store
        self.schedules = Schedules(store)
        self.start_run = start_run
        self.clock = clock
        self.poll_interval = poll_interval
        self.grace = grace
        self._runs = Runs(store)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Tick until ``stop``; a failed tick is logged and retried at the next."""
        while not self._stopping.is_set():
            try:
                await self.tick()
                delay = await self._delay()
            except Exception:
                log.exception("scheduler tick failed")
                delay = self.poll_interval
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass

    async def _delay(self) -> float:
        due = await self.schedules.next_due()
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, (due - self.clock()).total_seconds()))

    async def tick(self) -> list[Fire]:
        """Fire every schedule due now; returns what each fire did."""
        now = self.clock()
        fires: list[Fire] = []
        while True:
            async with self.schedules.claim_due(now) as claimed:
                if claimed is None:
                    return fires
                fires += await self._fire(claimed, now)

    async def _fire(self, claimed: Claimed, now: datetime) -> list[Fire]:
        schedule = claimed.schedule
        try:
            cron = schedule.cron
        except InvalidInput as exc:  # e.g. a zone that a tz database update removed
            log.error("schedule %s cannot fire: %s", schedule.schedule_id, exc.message)
            await claimed.disable()
            return []
        fires: list[Fire] = []
        last_run = schedule.last_run_id
        due = due_fires(schedule, cron, now)
        for decision in plan(due, now, schedule.catchup_policy, self.grace):
            if decision.start:
                fire = await self._start(schedule, decision.fire_at, last_run)
            else:
                detail = "due while no scheduler was running (catchup_policy)"
                fire = Fire(
                    schedule.schedule_id, decision.fire_at, "skipped", None, "missed", detail
                )
            await claimed.record_fire(
                fire.fire_at, fire.status, fire.run_id, fire.reason, fire.detail
            )
            last_run = fire.run_id or last_run
            fires.append(fire)
        last_fire = fires[-1].fire_at if fires else schedule.last_fire_at
        await claimed.advance(cron.next_fire(now), last_fire, last_run)
        return fires

    async def _start(self, schedule: Schedule, fire_at: datetime, last_run: str | None) -> Fire:
        sid = schedule.schedule_id
        run_id = fire_run_id(sid, fire_at)
        # A run already made for this fire (by a scheduler that died before recording it)
        # is this fire's run, whatever the overlap policy says now.
        if await self._status(run_id) is None and schedule.overlap_policy == "skip":
            status = None if last_run is None else await self._status(last_run)
            if status is not None and status not in TERMINAL:
                detail = f"the previous run {last_run} is still {status} (overlap_policy skip)"
                return Fire(sid, fire_at, "skipped", None, "overlap", detail)
        try:
            run_id = await self.start_run(schedule, fire_at, run_id)
        except PapayyaError as exc:
            if exc.http_status >= 500:  # the store is down: the tick fails, retried later
                raise
            log.warning("schedule %s could not start a run: %s", sid, exc.message)
            return Fire(sid, fire_at, "skipped", None, "error", exc.message)
        return Fire(sid, fire_at, "started", run_id)

    async def _status(self, run_id: str) -> str | None:
        """The run's status now (from its stream, not the lagging read model), or None."""
        found = await self.store.summary(run_stream(run_id))
        if found is not None:
            return str(found[1].get("status"))
        try:
            return (await self._runs.load(run_id)).status
        except RunNotFound:
            return None
