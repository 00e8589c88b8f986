"""Helpers shared by the projection tests: appending domain runs, reading table contents."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import msgspec

from eventstore import NewEvent, PostgresEventStore
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.state import RunState

READ_TABLES = {
    "runs": "SELECT * FROM runs ORDER BY run_id",
    "steps": "SELECT * FROM steps ORDER BY run_id, step_number",
    "costs": "SELECT * FROM costs ORDER BY project_id, agent_id, model, day",
    "run_counts": "SELECT * FROM run_counts ORDER BY project_id, agent_id, status",
    "run_days": "SELECT * FROM run_days ORDER BY project_id, agent_id, day",
    "run_minutes": "SELECT * FROM run_minutes ORDER BY project_id, minute",
    "run_durations": "SELECT * FROM run_durations ORDER BY project_id, minute, bin",
}


def without_nul(event: NewEvent) -> NewEvent:
    """The store refuses NUL characters (Postgres JSON cannot hold them); hypothesis loves
    them. Drop them so that generated runs can be stored."""
    raw = msgspec.json.encode(event.data).replace(b"\\u0000", b"")
    return msgspec.structs.replace(event, data=msgspec.json.decode(raw))


def owned(events: Sequence[ev.RunEvent], run_id: str, project: str, agent: str) -> list[Any]:
    """The run's events with its RunQueued rewritten to the given owner."""
    first = events[0]
    assert isinstance(first, ev.RunQueued)
    queued = msgspec.structs.replace(first, run_id=run_id, project_id=project, agent_id=agent)
    return [queued, *events[1:]]


def stored_form(events: Sequence[ev.RunEvent]) -> list[NewEvent]:
    return [without_nul(ev.to_new_event(e)) for e in events]


def expected_state(new_events: Sequence[NewEvent]) -> RunState:
    """The fold of what was stored (after NUL removal), the oracle for the runs row."""
    decoded = [ev.decode_event(e.type, e.data) for e in new_events]
    return fold([e for e in decoded if isinstance(e, ev.RunEvent)])


async def append_run(
    store: PostgresEventStore, run_id: str, events: Sequence[ev.RunEvent]
) -> list[NewEvent]:
    """Append and wait until readers can see it: the read fence is server-wide, so an open
    transaction of any other session (another test suite, say) can hide it for a while, and
    ``catch_up()`` only processes what is visible."""
    stored = stored_form(events)
    result = await store.append(f"run-{run_id}", stored)
    while await store.head() <= result.cursor:
        await asyncio.sleep(0.005)
    return stored


async def snapshot(dsn: str) -> dict[str, list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {name: [dict(r) for r in await conn.fetch(q)] for name, q in READ_TABLES.items()}
    finally:
        await conn.close()


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def simple_run(run_id: str, calls: int, cost: int = 10, model: str = "gpt-x") -> list[Any]:
    """A finished run whose one step made ``calls`` model calls of ``cost`` each."""
    return [
        ev.RunQueued(run_id=run_id, project_id="proj", agent_id="agent"),
        ev.RunStarted(attempt=1),
        ev.StepStarted(step_number=0, step_type="response"),
        *(
            ev.LlmCallRecorded(
                step_number=0,
                provider="openai",
                model=model,
                fingerprint=f"f{i}",
                input_tokens=100,
                cached_input_tokens=20,
                output_tokens=7,
                cost_micro_usd=cost,
            )
            for i in range(calls)
        ),
        ev.StepCompleted(step_number=0, output="ok"),
        ev.RunCompleted(output={"answer": 42}),
    ]
