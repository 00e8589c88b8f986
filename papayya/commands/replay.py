"""Replay a run from a step: a new run linked to its source by ``replayed_from`` and
``replay_from_step``, whose steps before that one are answered from the source's recording
and cost nothing (DESIGN §5). The source is untouched."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from msgspec import UNSET, UnsetType
from msgspec.structs import replace

from papayya.commands.owned import load_own
from papayya.commands.queue import (
    MODEL_KEY,
    SYSTEM_PROMPT_KEY,
    FindAgent,
    fields_of,
    new_run_id,
    queued,
)
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.state import INTERRUPTED, RunState, StepState
from papayya.errors import Conflict, InvalidInput, NotFound
from papayya.runs import Runs


def replay_of(source: RunState, new_run_id: str, from_step: int, input: Any = None) -> ev.RunQueued:
    """The ``RunQueued`` of a replay of ``source`` from ``from_step``."""
    if isinstance(from_step, bool) or not isinstance(from_step, int) or from_step < 0:
        raise InvalidInput("from_step must be an integer >= 0")
    if from_step > source.next_step:
        raise InvalidInput(f"run {source.run_id} has only {source.next_step} steps")
    budget = source.budget
    return queued(
        run_id=new_run_id,
        project_id=source.project_id,
        agent_id=source.agent_id,
        input=source.input if input is None else input,
        budget_micro_usd=budget.micro_usd,
        budget_input_tokens=budget.input_tokens,
        budget_output_tokens=budget.output_tokens,
        budget_total_tokens=budget.total_tokens,
        max_steps=source.max_steps,
        loop_threshold=source.loop_threshold,
        timeout_seconds=source.timeout_seconds,
        trigger="replay",
        callback_url=source.callback_url,
        replayed_from=source.run_id,
        replay_from_step=from_step,
        deployment_version=source.deployment_version,
        metadata=source.metadata,
    )


# Calls a copied step holds; the step's start and end are made from the source's fold.
_CALLS = (ev.LlmCallRecorded, ev.ToolCallRecorded, ev.CheckpointSaved)


def copied_steps(source: Sequence[ev.RunEvent], from_step: int) -> list[ev.RunEvent]:
    """The source's steps before ``from_step``, for the replay's own stream (appended with its
    ``RunQueued``): same numbers, marked ``replayed``, each with the calls it recorded in the
    source's order, so the replay's timeline is whole and its recording is its own. Model
    calls are copied answered (``replayed``) at no cost: the replay pays for none of them."""
    state = fold(source)
    calls: dict[int, list[ev.RunEvent]] = defaultdict(list)
    for event in source:
        if isinstance(event, _CALLS) and event.step_number < from_step:
            calls[event.step_number].append(_copied_call(event))
    copied: list[ev.RunEvent] = []
    for step in state.steps[:from_step]:
        n = step.step_number
        copied.append(
            ev.StepStarted(step_number=n, step_type=step.step_type, label=step.label, replayed=True)
        )
        copied += calls[n]
        copied.append(_end_of(step))
    return copied


def _end_of(step: StepState) -> ev.RunEvent:
    n = step.step_number
    if step.status == "completed":
        return ev.StepCompleted(
            step_number=n, duration_ms=step.duration_ms, output=step.output,
            output_ref=step.output_ref,
        )  # fmt: skip
    # Failed, or cut short in the source: shown, never answered from.
    return ev.StepFailed(
        step_number=n, error_code=step.error_code or INTERRUPTED,
        error_message=step.error_message or "", duration_ms=step.duration_ms,
    )  # fmt: skip


def _copied_call(event: ev.RunEvent) -> ev.RunEvent:
    if isinstance(event, ev.LlmCallRecorded):
        return replace(
            event, at=None, replayed=True, cost_micro_usd=0, input_tokens=0,
            cached_input_tokens=0, cache_write_tokens=0, output_tokens=0, reasoning_tokens=0,
            price_version=None, duration_ms=0.0, ttft_ms=None, usage_estimated=False,
            over_reservation=False,
        )  # fmt: skip
    return replace(event, at=None)


async def deployment_version(find_agent: FindAgent, run: RunState) -> str | None:
    """The run's agent's current deployment version; ``None`` (matches any run) while the
    agent has none or is not a registered agent (a local SDK run)."""
    try:
        agent = await find_agent(run.project_id, run.agent_id)
    except NotFound:
        return None
    return agent.deployment_version if agent.id == run.agent_id else None


async def replay_run(
    runs: Runs,
    find_agent: FindAgent,
    project: str,
    run_id: str,
    from_step: int,
    *,
    input: Any | UnsetType = UNSET,
    allow_version_mismatch: bool = False,
    model: str | None = None,
    system_prompt: str | None = None,
) -> RunState:
    """Queue the replay (``input``, when given, replaces the source's, ``None`` included).
    A source that ran another deployment than its agent's current one is refused (409)
    unless ``allow_version_mismatch``; the replay runs the current one. A built-in loop's
    replay may run its live steps with another ``model`` or ``system_prompt``."""
    source = await load_own(runs, project, run_id)
    recorded = await runs.events(run_id)
    current = await deployment_version(find_agent, source)
    if not allow_version_mismatch and current is not None and current != source.deployment_version:
        raise Conflict(
            f"run {run_id} ran deployment {source.deployment_version}, the agent is now at "
            f"{current}; send allow_version_mismatch to replay anyway"
        )
    event = replay_of(source, new_run_id(), from_step)
    changes: dict[str, Any] = {}
    if not isinstance(input, UnsetType):
        changes["input"] = input
    if current is not None:
        changes["deployment_version"] = current
    changed = {MODEL_KEY: model, SYSTEM_PROMPT_KEY: system_prompt}
    if any(v is not None for v in changed.values()):
        overrides = {k: v for k, v in changed.items() if v is not None}
        changes["metadata"] = {**event.metadata, **overrides}
    if changes:
        event = queued(**fields_of(event, **changes))
    return await queue_replay(runs, event, copied_steps(recorded, from_step))


async def queue_replay(runs: Runs, event: ev.RunQueued, copied: Sequence[ev.RunEvent]) -> RunState:
    """Create the replay with its copied steps, in one append."""
    return await runs.append(None, [event, *copied])
