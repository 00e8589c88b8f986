"""The meter's appends to one run: decisions queued on the run's lock are appended together,
each decided on the state the ones before it lead to (``RunCache.append``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.domain.state import Amount, RunState
from papayya.errors import BudgetExhausted
from papayya.metering.runcache import RunCache, RunSlot
from papayya.runs import Runs, run_stream
from papayya.runstates import RunStates


async def running_run(store: PostgresEventStore, budget: int) -> tuple[RunCache, RunSlot]:
    runs = RunStates(store)
    run_id = f"run_{uuid.uuid4().hex[:12]}"
    queued = ev.RunQueued(
        run_id=run_id, project_id="proj_batches", agent_id="agent", budget_micro_usd=budget
    )
    await runs.append(await runs.queue(queued), [ev.RunStarted(attempt=1)])
    cache = RunCache(store, runs=runs)
    return cache, await cache.slot(run_id)


Decide = Callable[[RunState], list[ev.RunEvent]]


def reserve_if_it_fits(amount: int, name: str) -> tuple[list[str], Decide]:
    """A decision like the meter's: reserve ``amount`` if the budget still covers it."""
    admitted: list[str] = []

    def decide(s: RunState) -> list[ev.RunEvent]:
        admitted.clear()
        if s.reservation(name) is not None:
            admitted.append(name)
            return []
        if s.budget.exceeded_by(s.committed + s.reserved + Amount(amount)) is not None:
            return []
        admitted.append(name)
        return [ev.BudgetReserved(reservation_id=name, amount_micro_usd=amount)]

    return admitted, decide


async def test_queued_decisions_share_appends_and_never_pass_the_budget(
    pg_store: PostgresEventStore,
) -> None:
    cache, slot = await running_run(pg_store, budget=100)
    decisions = [reserve_if_it_fits(30, f"r{i}") for i in range(20)]
    await asyncio.gather(*(cache.append(slot, decide) for _, decide in decisions))
    admitted = [name for found, _ in decisions for name in found]
    assert len(admitted) == 3  # 3 x 30 fit in 100, whatever the batches
    stored = await Runs(pg_store).load(slot.state.run_id)
    assert sorted(r.reservation_id for r in stored.reservations) == sorted(admitted)
    assert stored.reserved.micro_usd == 90 and stored == slot.state
    recorded = await pg_store.read_stream(run_stream(slot.state.run_id))
    reservations = [r for r in recorded if r.event_type == "BudgetReserved"]
    # Decisions queued while the run is busy go in one append: fewer commits than calls.
    assert len({r.transaction_id for r in reservations}) < len(reservations)


async def test_a_decision_that_raises_fails_its_own_caller_only(
    pg_store: PostgresEventStore,
) -> None:
    cache, slot = await running_run(pg_store, budget=100)

    def too_much(s: RunState) -> list[ev.RunEvent]:
        # Not checked by this decision: the fold's budget rule refuses it.
        return [ev.BudgetReserved(reservation_id="greedy", amount_micro_usd=1000)]

    first, decide_first = reserve_if_it_fits(40, "first")
    last, decide_last = reserve_if_it_fits(40, "last")
    results = await asyncio.gather(
        cache.append(slot, decide_first),
        cache.append(slot, too_much),
        cache.append(slot, decide_last),
        return_exceptions=True,
    )
    assert isinstance(results[1], BudgetExhausted)
    assert first == ["first"] and last == ["last"]
    stored = await Runs(pg_store).load(slot.state.run_id)
    assert sorted(r.reservation_id for r in stored.reservations) == ["first", "last"]


async def test_a_caller_gone_before_its_turn_is_never_decided(
    pg_store: PostgresEventStore,
) -> None:
    cache, slot = await running_run(pg_store, budget=100)
    decided: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_run() -> None:
        async with slot.lock:  # another writer of the run in this process
            entered.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_run())
    await entered.wait()

    def gone(s: RunState) -> list[ev.RunEvent]:
        decided.append("gone")
        return [ev.BudgetReserved(reservation_id="gone", amount_micro_usd=10)]

    waiting = asyncio.create_task(cache.append(slot, gone))
    _, decide_next = reserve_if_it_fits(10, "next")
    following = asyncio.create_task(cache.append(slot, decide_next))
    while len(slot.queued) < 2:  # both queued behind the holder
        await asyncio.sleep(0)
    waiting.cancel()
    release.set()
    await holder
    state = await following
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert decided == []
    assert [r.reservation_id for r in state.reservations] == ["next"]
