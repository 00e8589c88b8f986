"""The API's shapes of runs and steps, shared by the REST handlers, SSE, callbacks and the CLI.

They live below ``web/`` so that workers (callbacks) and the CLI import them downward."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from papayya.domain.events import AgentOutput, RunEvent
from papayya.domain.state import RunState, StepState
from papayya.money import cents_up, usd_string


class LeaseOut(msgspec.Struct):
    """The worker's lease on a running run's attempt, timed by the database's clock. A worker
    renews it every heartbeat; one not renewed for half its length belongs to a worker that is
    gone, and once it expires the recovery sweeper queues the run again."""

    expires_at: datetime
    renewed_at: datetime
    expires_in_seconds: float  # negative once expired
    renewed_seconds_ago: float


class RunOut(msgspec.Struct):
    id: str
    project_id: str
    agent_id: str
    status: str
    input: Any
    output: Any
    error_code: str | None
    error_message: str | None
    current_step: int
    total_input_tokens: int
    total_output_tokens: int
    total_cached_tokens: int
    total_cost_cents: int
    cost_usd: str
    budget_cents: int | None
    max_steps: int | None
    attempt: int
    trigger: str
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    replayed_from: str | None
    replay_from_step: int | None
    diverged_at_step: int | None
    deployment_version: str | None
    idempotency_key: str | None
    # A running local run (the SDK's own process) whose heartbeat stopped for the lease time:
    # when it last beat. Its process may be gone; cancelling ends it at once.
    no_heartbeat_since: datetime | None = None
    # A running run's worker lease (null when no worker holds it: queued, ended, local runs).
    lease: LeaseOut | None = None
    # Seconds the run may take from its start, across attempts (a worker ends it ``failed``
    # with code ``timeout`` then); null for a local (SDK) run, which no worker runs, and for
    # a run queued before limits existed (its limit is 3600).
    timeout_seconds: int | None = None


class ToolCallOut(msgspec.Struct):
    tool: str
    call_id: str | None
    input: Any
    output: Any
    error: str | None
    duration_ms: float


class StepOut(msgspec.Struct):
    step_number: int
    step_type: str
    label: str | None
    status: str
    attempt: int
    model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str
    duration_ms: float
    tool_calls: list[ToolCallOut]
    requested_tools: list[dict[str, Any]]
    output: Any
    output_ref: str | None
    error: str | None
    error_code: str | None
    started_at: datetime | None
    completed_at: datetime | None
    # A model call of the step counted at its reservation (its usage never arrived), or above
    # it (the provider reported more); the output cap the budget set, if it lowered one.
    usage_estimated: bool = False
    over_reservation: bool = False
    output_capped: int | None = None
    # A replay's step before its from_step: answered from the source's recording.
    replayed: bool = False


def run_out(state: RunState) -> RunOut:
    usage = state.usage
    budget = state.budget.micro_usd
    return RunOut(
        id=state.run_id,
        project_id=state.project_id,
        agent_id=state.agent_id,
        status=state.status,
        input=state.input,
        output=state.output,
        error_code=state.error_code,
        error_message=state.error_message,
        current_step=state.next_step,
        total_input_tokens=usage.total_input_tokens,
        total_output_tokens=usage.total_output_tokens,
        total_cached_tokens=usage.cached_input_tokens,
        total_cost_cents=cents_up(usage.cost_micro_usd),
        cost_usd=usd_string(usage.cost_micro_usd),
        budget_cents=None if budget is None else cents_up(budget),
        max_steps=state.max_steps,
        attempt=state.attempt,
        trigger=state.trigger,
        created_at=state.queued_at,
        started_at=state.started_at,
        completed_at=state.completed_at,
        replayed_from=state.replayed_from,
        replay_from_step=state.replay_from_step,
        diverged_at_step=state.diverged_at_step,
        deployment_version=state.deployment_version,
        idempotency_key=state.idempotency_key,
        timeout_seconds=state.timeout_seconds,
    )


def run_out_from_summary(summary: dict[str, Any]) -> RunOut:
    """A run from its stream summary (``papayya.runs.run_summary``), without its steps."""
    state = msgspec.convert({**summary, "steps": []}, RunState, strict=False)
    out = run_out(state)
    out.current_step = int(summary.get("current_step", 0))
    return out


def step_out(step: StepState) -> StepOut:
    usage = step.usage
    return StepOut(
        step_number=step.step_number,
        step_type=step.step_type,
        label=step.label,
        status=step.status,
        attempt=step.attempt,
        model=step.model,
        input_tokens=usage.total_input_tokens,
        output_tokens=usage.total_output_tokens,
        cached_tokens=usage.cached_input_tokens,
        cost_usd=usd_string(usage.cost_micro_usd),
        duration_ms=step.duration_ms,
        tool_calls=[
            ToolCallOut(t.tool, t.call_id, t.input, t.output, t.error, t.duration_ms)
            for t in step.tool_calls
        ],
        requested_tools=list(step.requested_tools),
        output=step.output,
        output_ref=step.output_ref,
        error=step.error_message,
        error_code=step.error_code,
        started_at=step.started_at,
        completed_at=step.completed_at,
        usage_estimated=step.usage_estimated,
        over_reservation=step.over_reservation,
        output_capped=step.output_capped,
        replayed=step.replayed,
    )


class OutputLineOut(msgspec.Struct):
    """A line the agent wrote (stdout and stderr share one pipe, so their order is kept; its
    ``logging`` goes there too), with when the worker read it and in which attempt."""

    at: datetime
    attempt: int
    text: str


class RunOutputOut(msgspec.Struct):
    """Output lines of an attempt as the worker recorded them, sent live by
    ``GET /v1/runs/{id}/events`` (event ``output``); ``final``: the attempt's output is all
    recorded."""

    attempt: int
    final: bool
    truncated: bool
    data: list[OutputLineOut]


def run_output_out(event: AgentOutput) -> RunOutputOut:
    lines = [
        OutputLineOut(datetime.fromtimestamp(at, UTC), event.attempt, t) for at, t in event.lines
    ]
    return RunOutputOut(event.attempt, event.final, event.truncated, lines)


class RunLogsOut(msgspec.Struct):
    """A run's output, oldest first. Each attempt keeps at most ``OUTPUT_EVENT_CHARS`` of it
    (workers/worker.py): its first lines, recorded while it runs, and its last, recorded as
    it ends; ``truncated``: an attempt lost lines in between. ``attempts``: those whose output
    is all recorded (their final ``AgentOutput`` is there); a running attempt's lines so far
    are in ``data`` already."""

    data: list[OutputLineOut]
    truncated: bool
    attempts: list[int]


def run_logs_out(events: Sequence[RunEvent]) -> RunLogsOut:
    """The output of a run's events: all its ``AgentOutput`` events merged (several per
    attempt when it was recorded while the attempt ran; one, final, in older runs)."""
    lines: list[OutputLineOut] = []
    truncated = False
    attempts: list[int] = []
    for event in events:
        if isinstance(event, AgentOutput):
            truncated = truncated or event.truncated
            if event.final:
                attempts.append(event.attempt)
            lines += (
                OutputLineOut(datetime.fromtimestamp(at, UTC), event.attempt, text)
                for at, text in event.lines
            )
    lines.sort(key=lambda line: line.at)
    return RunLogsOut(lines, truncated, sorted(set(attempts)))
