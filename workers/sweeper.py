"""The recovery sweeper (DESIGN §8): runs whose worker is gone, and queued runs Redis lost.

- A lease that expired means the worker stopped heartbeating (it died, or lost Postgres for
  longer than the lease). Its attempt is over: the run is queued again (``AttemptLost``) and
  its next attempt resumes from the recording; after ``max_attempts`` it fails with
  ``worker_lost``; a run being cancelled ends ``cancelled``.
- An attempt is lost only once its calls in flight at the gateway have settled
  (``papayya.domain.handover``): the next attempt is answered from their recording.
- Every queued run that has waited a while is enqueued again unless Redis still marks it as
  in the stream, so a Redis that lost its data (FLUSHALL, a restart without persistence)
  loses no run. Several sweepers may run: every decision is an append at the run's version.
- A local run (the SDK's, which no worker leases) that showed no sign of life (heartbeat,
  event) for ``abandon_after`` seconds (``PAPAYYA_ABANDON_SECONDS``, 24 h) ends ``failed`` with
  code ``abandoned`` (``papayya.liveness``); its calls in flight count in full.
- A budget reservation open for longer than any model call may last belongs to a call that
  nobody will settle (its gateway died mid-call): it is settled at its reserved amount, the
  worst case it was admitted with, marked ``stale`` and ``usage_estimated`` (DESIGN §6). If
  that spends the run's budget, a running run ends ``budget_exceeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from eventstore.postgres import PostgresEventStore
from papayya import liveness
from papayya.budget import exhausted
from papayya.domain import events as ev
from papayya.domain.handover import (
    CALL_TIMEOUT_SECONDS,
    SETTLE_WAIT_SECONDS,
    handover,
    settled_in_full,
)
from papayya.domain.state import RunState
from papayya.errors import RunNotFound
from papayya.readmodels.heartbeats import Heartbeats
from papayya.readmodels.leases import Leases
from papayya.runs import Runs
from workers.queue import RunQueue

log = logging.getLogger(__name__)

BATCH: Final = 200
# Past the gateway's call timeout, with room for clocks that disagree a little.
STALE_RESERVATION_SECONDS: Final = CALL_TIMEOUT_SECONDS + 60


class Sweeper:
    def __init__(
        self,
        store: PostgresEventStore,
        queue: RunQueue,
        *,
        max_attempts: int = 3,
        interval: float = 5.0,
        requeue_after: float = 10.0,
        stale_reservation_after: float = STALE_RESERVATION_SECONDS,
        settle_wait: float = SETTLE_WAIT_SECONDS,
        abandon_after: float | None = None,
    ) -> None:
        self.store = store
        self.runs = Runs(store)
        self.leases = Leases(store)
        self.heartbeats = Heartbeats(store)
        self.queue = queue
        self.max_attempts = max_attempts
        self.interval = interval
        self.requeue_after = requeue_after
        self.stale_reservation_after = stale_reservation_after
        self.settle_wait = settle_wait
        self.abandon_after = liveness.abandon_seconds() if abandon_after is None else abandon_after
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweeper: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    async def sweep(self) -> None:
        await self.recover_expired()
        await self.requeue_waiting()
        await self.settle_stale_reservations()
        await self.abandon_silent()

    async def abandon_silent(self) -> int:
        """End every local run silent for ``abandon_after`` seconds; how many ended."""
        ended = 0
        for run_id, attempt in await self.heartbeats.abandoned(self.abandon_after, BATCH):

            def decide(state: RunState, attempt: int = attempt) -> list[ev.RunEvent]:
                if state.status != "running" or state.attempt != attempt:
                    return []  # it moved on (resumed, ended) since the look
                message = (
                    f"no heartbeat from the process of attempt {attempt} for "
                    f"{self.abandon_after:g} s: abandoned"
                )
                return [
                    *settled_in_full(state.reservations),
                    ev.RunFailed(code=liveness.ABANDONED, message=message),
                ]

            with contextlib.suppress(RunNotFound):
                state = await self.runs.execute(run_id, decide)
                if state.error_code == liveness.ABANDONED:
                    ended += 1
                    log.info("run %s: abandoned (attempt %s)", run_id, attempt)
        return ended

    async def settle_stale_reservations(self) -> int:
        """Settle every reservation older than ``stale_reservation_after``; how many."""
        after = self.stale_reservation_after
        settled = 0
        for run_id in await self.leases.reserving_runs(after, BATCH):
            settled += await self._settle_stale(run_id)
        return settled

    async def _settle_stale(self, run_id: str) -> int:
        decided: list[ev.RunEvent] = []

        def decide(state: RunState) -> list[ev.RunEvent]:
            cutoff = datetime.now(UTC) - timedelta(seconds=self.stale_reservation_after)
            decided[:] = stale_settlements(state, cutoff)
            return decided

        with contextlib.suppress(RunNotFound):
            await self.runs.execute(run_id, decide)
        count = sum(isinstance(e, ev.BudgetSettled) for e in decided)
        if count:
            log.info("run %s: settled %d stale reservations at their amounts", run_id, count)
        return count

    async def recover_expired(self) -> int:
        expired = await self.leases.expired(BATCH)
        for lease in expired:
            await self._recover(lease.run_id, lease.attempt, lease.worker)
        return len(expired)

    async def _recover(self, run_id: str, attempt: int, worker: str) -> None:
        decided: list[ev.RunEvent] = []
        waiting = False

        def decide(state: RunState) -> list[ev.RunEvent]:
            nonlocal waiting
            ending = recovery(state, attempt, worker, self.max_attempts)
            found = handover(state, ending, datetime.now(UTC), self.settle_wait)
            waiting = found is None
            decided[:] = found or []
            return decided

        with contextlib.suppress(RunNotFound):
            await self.runs.execute(run_id, decide)
            if waiting:  # calls of the attempt are still in flight: look again next sweep
                return
            if decided:
                log.info("run %s: attempt %s lost with worker %s", run_id, attempt, worker)
        await self.leases.drop_expired(run_id, attempt)

    async def requeue_waiting(self) -> int:
        waiting = await self.leases.waiting_runs(self.requeue_after, BATCH * 5)
        added = await self.queue.enqueue_unmarked(waiting)
        if added:
            await self.queue.ensure_group()
            log.info("sweeper: enqueued %d queued runs Redis did not have", len(added))
        return len(added)


def recovery(state: RunState, attempt: int, worker: str, max_attempts: int) -> list[ev.RunEvent]:
    """What ends an attempt whose worker stopped heartbeating (nothing if it already ended)."""
    if state.status != "running" or state.attempt != attempt:
        return []
    if state.cancel_requested:
        return [ev.RunCancelled(reason=state.cancel_reason)]
    if attempt >= max_attempts:
        message = (
            f"the worker of attempt {attempt} stopped heartbeating ({worker}); "
            f"gave up after {max_attempts} attempts"
        )
        return [ev.RunFailed(code="worker_lost", message=message)]
    return [ev.AttemptLost(attempt=attempt, reason="lease_expired", worker=worker)]


def stale_settlements(state: RunState, cutoff: datetime) -> list[ev.RunEvent]:
    """Settle the reservations made before ``cutoff`` at their reserved amounts; end a running
    run whose budget that spends (once no other call of it is in flight)."""
    stale = [r for r in state.reservations if r.reserved_at is not None and r.reserved_at < cutoff]
    events: list[ev.RunEvent] = [*settled_in_full(stale)]
    if not stale or state.status != "running" or len(stale) < len(state.reservations):
        return events
    committed = sum((r.amount for r in stale), state.committed)
    limit = exhausted(state.budget, committed)
    if limit is not None:
        message = (
            f"the run's {limit} budget is spent (calls whose usage never arrived count in full)"
        )
        events.append(ev.BudgetExceeded(message=message, limit=limit))
    return events
