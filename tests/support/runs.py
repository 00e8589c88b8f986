"""Runs written straight to the event store, step by step, as the read-side tests (usage,
metrics, dashboard) need them, and the projectors run over them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.runs import Runs
from projections import Projections


async def start_run(runs: Runs, run_id: str, project: str, agent: str = "agent-a") -> RunState:
    state = await runs.append(
        None, [ev.RunQueued(run_id=run_id, project_id=project, agent_id=agent)]
    )
    return await runs.append(state, [ev.RunStarted(attempt=1)])


def checkpoint_step(n: int, result: Any = None) -> list[ev.RunEvent]:
    label = f"task-{n}"
    return [
        ev.StepStarted(step_number=n, step_type="checkpoint", label=label),
        ev.CheckpointSaved(step_number=n, label=label, fingerprint=label, result=result),
        ev.StepCompleted(step_number=n, duration_ms=1.5),
    ]


def llm_call(n: int, model: str = "gpt-test", cost: int = 1234, **tokens: int) -> ev.RunEvent:
    return ev.LlmCallRecorded(
        step_number=n,
        provider="openai",
        model=model,
        fingerprint=f"call-{n}",
        input_tokens=tokens.get("input_tokens", 100),
        cached_input_tokens=tokens.get("cached_input_tokens", 10),
        output_tokens=tokens.get("output_tokens", 20),
        cost_micro_usd=cost,
    )


def llm_step(n: int, model: str = "gpt-test", cost: int = 1234) -> list[ev.RunEvent]:
    return [
        ev.StepStarted(step_number=n, step_type="response"),
        llm_call(n, model, cost),
        ev.StepCompleted(step_number=n, output=f"answer {n}"),
    ]


async def append(runs: Runs, state: RunState, events: Sequence[ev.RunEvent]) -> RunState:
    return await runs.append(state, list(events))


async def project_everything(store: PostgresEventStore, dsn: str) -> None:
    """Run the projectors over every event ``store`` appended. The read fence trails the last
    commit while a transaction is open anywhere on the database server (other suites share
    it), so first wait until they are all visible."""
    await store.wait_visible()
    await Projections(store, dsn).catch_up()


OLD_DAY = datetime(2024, 1, 15, 12, tzinfo=UTC)


async def old_run(runs: Runs, run_id: str, project: str, cost: int) -> None:
    """A run from January 2024, every event dated then."""
    events: list[ev.RunEvent] = [
        ev.RunQueued(run_id=run_id, project_id=project, agent_id="a1", at=OLD_DAY),
        ev.RunStarted(attempt=1, at=OLD_DAY),
        ev.StepStarted(step_number=0, step_type="response", at=OLD_DAY),
        ev.LlmCallRecorded(
            step_number=0,
            provider="openai",
            model="m1",
            fingerprint="f",
            input_tokens=1000,
            output_tokens=5,
            cost_micro_usd=cost,
            at=OLD_DAY,
        ),
        ev.StepCompleted(step_number=0, at=OLD_DAY),
        ev.RunCompleted(at=OLD_DAY),
    ]
    await runs.append(None, events)
