"""The ``runs`` projector: a ``runs`` row per run and a ``steps`` row per step, computed with
the domain's run fold (the one resume, replay and time travel use), so they always agree; and
the aggregates of the runs (``projections.aggregates``), which it moves as each run's state
moves, in the same transaction as the rows they sum up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec

from eventstore.protocol import EventStore
from eventstore.types import RecordedEvent
from papayya.domain.events import RunEvent
from papayya.domain.fold import fold
from papayya.domain.state import RunState, StepState
from projections.aggregates import TABLES as AGGREGATES
from projections.aggregates import Tally
from projections.lru import Lru
from projections.projector import Envelope, Projector, decode, utc

RUN_CATEGORY: Final = "run"
_encode = msgspec.json.Encoder().encode


class RunsProjector(Projector):
    """Folds each run's new events onto its state before the batch and upserts the run and
    the steps that changed. The run row is the whole state, so writing it twice is harmless."""

    name = "runs"
    categories = frozenset({RUN_CATEGORY})
    tables = ("runs", "steps", *AGGREGATES)

    def __init__(self, store: EventStore, *, suffix: str = "", cache_size: int = 4096) -> None:
        super().__init__(store, suffix=suffix)
        # stream id -> (stream version, state after it). A memo of the fold of an immutable
        # stream prefix: it stays true whether or not the transaction that used it commits.
        self._states: Lru[str, tuple[int, RunState]] = Lru(cache_size)

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        runs: list[dict[str, Any]] = []
        steps: list[dict[str, Any]] = []
        tally = Tally()
        for stream_id, items in by_stream(batch).items():
            before = await self._state_before(stream_id, items[0].recorded.stream_version)
            events = [item.event for item in items if isinstance(item.event, RunEvent)]
            after = fold(events, before) if events else before
            if after is None:
                continue
            last = items[-1].recorded
            self._states.put(stream_id, (last.stream_version, after))
            runs.append(run_row(after, last))
            steps.extend(step_row(after, step) for step in changed_steps(before, after))
            if after is not before:
                tally.move(before, after)
        if runs:
            await conn.execute(self.sql("upsert_runs"), _encode(runs).decode())
        if steps:
            await conn.execute(self.sql("upsert_steps"), _encode(steps).decode())
        await tally.write(conn, self)

    async def _state_before(self, stream_id: str, version: int) -> RunState | None:
        """The run's state after its first ``version - 1`` events."""
        if version <= 1:
            return None
        memo = self._states.get(stream_id)
        if memo is not None and memo[0] == version - 1:
            return memo[1]
        # A miss (after a restart or an eviction) reads the stream prefix once. It happens
        # inside the batch transaction, but only stream reads, which the fence never waits on.
        recorded = await self.store.read_stream(stream_id, 1, version - 1)
        events = [item.event for item in decode(recorded) if isinstance(item.event, RunEvent)]
        return fold(events) if events else None


def by_stream(batch: Sequence[Envelope]) -> dict[str, list[Envelope]]:
    groups: dict[str, list[Envelope]] = {}
    for item in batch:
        groups.setdefault(item.recorded.stream_id, []).append(item)
    return groups


def changed_steps(before: RunState | None, after: RunState) -> list[StepState]:
    old = before.steps if before is not None else ()
    return [s for i, s in enumerate(after.steps) if i >= len(old) or old[i] != s]


def _time(moment: datetime | None) -> datetime | None:
    return None if moment is None else utc(moment)


def run_row(state: RunState, last: RecordedEvent) -> dict[str, Any]:
    usage = state.usage
    return {
        "run_id": state.run_id,
        "project_id": state.project_id,
        "agent_id": state.agent_id,
        "status": state.status,
        "trigger": state.trigger,
        "input": state.input,
        "output": state.output,
        "output_ref": state.output_ref,
        "error_code": state.error_code,
        "error_message": state.error_message,
        "current_step": state.next_step,
        "total_input_tokens": usage.total_input_tokens,
        "total_output_tokens": usage.total_output_tokens,
        "total_cached_tokens": usage.cached_input_tokens,
        "total_cost_micro_usd": usage.cost_micro_usd,
        "budget_micro_usd": state.budget.micro_usd,
        "max_steps": state.max_steps,
        "attempt": state.attempt,
        "replayed_from": state.replayed_from,
        "replay_from_step": state.replay_from_step,
        "diverged_at_step": state.diverged_at_step,
        "deployment_version": state.deployment_version,
        "idempotency_key": state.idempotency_key,
        # queued_at is RunQueued's time; from_recorded fills it from the store if unset.
        "created_at": _time(state.queued_at) or utc(last.recorded_at),
        "started_at": _time(state.started_at),
        "completed_at": _time(state.completed_at),
        "updated_at": utc(last.recorded_at),
        "version": last.stream_version,
    }


def step_row(run: RunState, step: StepState) -> dict[str, Any]:
    usage = step.usage
    return {
        "run_id": run.run_id,
        "step_number": step.step_number,
        "project_id": run.project_id,
        "step_type": step.step_type,
        "label": step.label,
        "status": step.status,
        "attempt": step.attempt,
        "provider": step.provider,
        "model": step.model,
        "input_tokens": usage.total_input_tokens,
        "output_tokens": usage.total_output_tokens,
        "cached_tokens": usage.cached_input_tokens,
        "cost_micro_usd": usage.cost_micro_usd,
        "duration_ms": step.duration_ms,
        "tool_calls": step.tool_calls,
        "output": step.output,
        "output_ref": step.output_ref,
        "error_code": step.error_code,
        "error_message": step.error_message,
        "started_at": _time(step.started_at),
        "completed_at": _time(step.completed_at),
    }
