"""Run commands on the Postgres store: illegal transitions append nothing, concurrent writers
never duplicate a step number, and the inline summary reads its own writes."""

from __future__ import annotations

import asyncio

import pytest

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.errors import ConcurrencyError, IllegalTransition, InvalidInput, RunNotFound
from papayya.runs import Runs, run_stream


def queued(run_id: str = "r1") -> ev.RunQueued:
    return ev.RunQueued(run_id=run_id, project_id="p", agent_id="a")


async def started_run(runs: Runs, run_id: str = "r1") -> RunState:
    return await runs.append(None, [queued(run_id), ev.RunStarted(attempt=1)])


def checkpoint(n: int) -> list[ev.RunEvent]:
    return [
        ev.StepStarted(step_number=n, step_type="checkpoint", label=f"t{n}"),
        ev.CheckpointSaved(step_number=n, label=f"t{n}", fingerprint=f"f{n}", result=n),
        ev.StepCompleted(step_number=n),
    ]


async def test_summary_is_visible_in_the_same_append(pg_store: PostgresEventStore) -> None:
    runs = Runs(pg_store)
    state = await started_run(runs)
    version, summary = await pg_store.summary(run_stream("r1")) or (0, {})
    assert version == state.version == 2
    assert summary["status"] == "running" and summary["current_step"] == 0
    state = await runs.append(state, checkpoint(0))
    _, summary = await pg_store.summary(run_stream("r1")) or (0, {})
    assert summary["current_step"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        [ev.StepStarted(step_number=5, step_type="checkpoint")],  # out of order
        [ev.StepCompleted(step_number=0)],  # not in flight
        [ev.RunCompleted(), ev.RunFailed(code="x")],  # a second terminal event
        [ev.RunQueued(run_id="r1", project_id="p", agent_id="a")],  # queued twice
    ],
)
async def test_illegal_events_append_nothing(
    pg_store: PostgresEventStore, bad: list[ev.RunEvent]
) -> None:
    runs = Runs(pg_store)
    state = await started_run(runs)
    with pytest.raises(IllegalTransition):
        await runs.append(state, bad)
    assert await pg_store.stream_version(run_stream("r1")) == state.version


async def test_completing_a_cancelled_run_is_refused(pg_store: PostgresEventStore) -> None:
    runs = Runs(pg_store)
    state = await started_run(runs)
    state = await runs.append(state, [ev.RunCancelled(reason="user")])
    with pytest.raises(IllegalTransition):
        await runs.append(state, [ev.RunCompleted(output=1)])
    assert (await runs.load("r1")).status == "cancelled"


async def test_stale_state_loses_with_concurrency_error(pg_store: PostgresEventStore) -> None:
    runs = Runs(pg_store)
    state = await started_run(runs)
    await runs.append(state, checkpoint(0))
    with pytest.raises(ConcurrencyError):
        await runs.append(state, checkpoint(0))
    assert [s.step_number for s in (await runs.load("r1")).steps] == [0]


async def test_concurrent_writers_never_duplicate_step_numbers(
    pg_store: PostgresEventStore,
) -> None:
    runs = Runs(pg_store)
    await started_run(runs)
    results = await asyncio.gather(
        *(runs.execute("r1", lambda s: checkpoint(s.next_step)) for _ in range(15))
    )
    assert len(results) == 15
    state = await runs.load("r1")
    assert [s.step_number for s in state.steps] == list(range(15))
    numbers = [
        e.data["step_number"]
        for e in await pg_store.read_stream(run_stream("r1"))
        if e.event_type == "StepStarted"
    ]
    assert numbers == list(range(15))


async def test_queue_is_idempotent_and_state_at(pg_store: PostgresEventStore) -> None:
    runs = Runs(pg_store)
    first = await runs.queue(queued("r2"))
    again = await runs.queue(queued("r2"))
    assert first.version == again.version == 1
    state = await runs.append(again, [ev.RunStarted(attempt=1), *checkpoint(0), *checkpoint(1)])
    at0 = await runs.state_at("r2", 0)
    assert at0.next_step == 1 and at0.steps[0].output == 0 and at0.version == 5
    assert (await runs.state_at("r2", 1)).steps == (await runs.load("r2")).steps
    assert len(state.steps) == 2


async def test_bad_input(pg_store: PostgresEventStore) -> None:
    runs = Runs(pg_store)
    with pytest.raises(RunNotFound):
        await runs.load("nope")
    with pytest.raises(InvalidInput):
        await runs.load("")
    with pytest.raises(InvalidInput):
        await runs.append(None, ["not an event"])  # type: ignore[list-item]
    with pytest.raises(IllegalTransition):
        await runs.append(None, [ev.RunStarted(attempt=1)])  # no RunQueued first
    await pg_store.wait_visible()
    assert (await pg_store.read_all()).events == []


async def test_paged_state_at_equals_the_full_fold(
    pg_store: PostgresEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state_at reads only as far as its step ends; with tiny pages, every step must still
    fold exactly as the whole stream does (a crash-interrupted step included)."""
    import papayya.runs as runs_module
    from papayya.domain.fold import state_at

    runs = Runs(pg_store)
    state = await started_run(runs)
    for n in range(4):
        state = await runs.append(state, checkpoint(n))
    state = await runs.append(
        state,
        [ev.StepStarted(step_number=4, step_type="checkpoint"), ev.RunStarted(attempt=2)],
    )
    state = await runs.append(state, checkpoint(5))
    everything = await runs.events("r1")
    for page in (1, 2, 3, 5, 2000):
        monkeypatch.setattr(runs_module, "STATE_AT_PAGE", page)
        for step in range(6):
            assert await runs.state_at("r1", step) == state_at(everything, step), (page, step)
    with pytest.raises(RunNotFound):
        await runs.state_at("nope", 0)
