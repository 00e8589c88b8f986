"""The run fold: one pure function from a run's events to its state (DESIGN §4).

Projections, resume, replay and time travel all use it. It is strict: every event passes
``check`` first, so an illegal sequence raises instead of folding into a state nobody meant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from msgspec.structs import replace

from papayya.domain import events as ev
from papayya.domain.attach import requesting_step
from papayya.domain.rules import check_folded
from papayya.domain.state import (
    INTERRUPTED,
    Amount,
    Budget,
    Reservation,
    RunState,
    RunStatus,
    StepState,
    ToolCall,
    in_flight,
)
from papayya.errors import InvalidInput, RunNotFound, StepNotFound

# Handlers update the step list in place and return the new state. Keeping the steps in one
# list for the whole fold (and making the tuple once at the end) keeps a fold linear in the
# number of events instead of copying the step tuple on every step event.
Handler = Callable[[RunState, list[StepState], Any], RunState]


def fold(events: Iterable[ev.RunEvent], initial: RunState | None = None) -> RunState:
    """The state after ``events``, continuing from ``initial`` if given.

    Raises ``RunNotFound`` if there is nothing to fold, ``InvalidInput`` for things that are
    not run events, and whatever ``check`` raises for an event the run does not accept.
    """
    if initial is not None and not isinstance(initial, RunState):
        raise InvalidInput("initial must be a RunState or None")
    if isinstance(events, str | bytes | dict) or not isinstance(events, Iterable):
        raise InvalidInput("events must be an iterable of run events")
    state = initial
    steps = list(initial.steps) if initial else []
    count = 0
    for event in events:
        if not isinstance(event, ev.RunEvent):
            raise InvalidInput(f"expected a run event, got {type(event).__name__}")
        check_folded(state, steps, event)
        if state is None:
            state = _queued(event)  # check_folded let only RunQueued through
        else:
            state = _HANDLERS[type(event)](state, steps, event)
        count += 1
    if state is None:
        raise RunNotFound("the run has no events")
    version = (initial.version if initial else 0) + count
    return replace(state, steps=tuple(steps), version=version)


def apply(state: RunState | None, event: ev.RunEvent) -> RunState:
    """The state after one more event (``fold([event], state)``). It copies the step tuple, so
    fold many events at once rather than applying them one by one."""
    return fold([event], state)


def state_at(events: Iterable[ev.RunEvent], step: int) -> RunState:
    """The state after step ``step``: the fold of every event up to the last one that changes
    that step (starts, records into or ends it), never past the start of a later step.

    So a ``tool_call`` step includes the tools that ran after its model call, and a step cut
    short by a crash or the run's end includes the event that ended it. ``StepNotFound`` if
    the run has no such step.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInput("step must be an integer >= 0")
    if isinstance(events, str | bytes | dict) or not isinstance(events, Iterable):
        raise InvalidInput("events must be an iterable of run events")
    events = list(events)
    return fold(events[: _end_of_step(events, step)])


_STEP_ENDERS = (ev.StepCompleted, ev.StepFailed)
# Events that change the step they name.
_STEP_EVENTS = (
    *_STEP_ENDERS,
    ev.StepStarted,
    ev.LlmCallRecorded,
    ev.ToolCallRecorded,
    ev.CheckpointSaved,
)
# Events that end a step still in flight: a recovery, or the run failing or stopping.
_RUN_ENDERS = (ev.RunStarted, ev.RunFailed, ev.RunCancelled, ev.BudgetExceeded)


def _end_of_step(events: list[ev.RunEvent], step: int) -> int:
    started = ended = False
    end = 0
    for i, event in enumerate(events):
        number = event.step_number if isinstance(event, _STEP_EVENTS) else None
        if isinstance(event, ev.StepStarted):
            if started and event.step_number > step:
                break
            started = started or event.step_number == step
        if not started:
            continue
        if number == step:
            end, ended = i + 1, ended or isinstance(event, _STEP_ENDERS)
        elif not ended and isinstance(event, _RUN_ENDERS):
            end, ended = i + 1, True
    if not started:
        raise StepNotFound(f"the run has no step {step}")
    return end


def _queued(event: ev.RunEvent) -> RunState:
    assert isinstance(event, ev.RunQueued)
    return RunState(
        run_id=event.run_id,
        project_id=event.project_id,
        agent_id=event.agent_id,
        status="queued",
        input=event.input,
        budget=Budget(
            event.budget_micro_usd,
            event.budget_input_tokens,
            event.budget_output_tokens,
            event.budget_total_tokens,
        ),
        max_steps=event.max_steps,
        loop_threshold=event.loop_threshold,
        trigger=event.trigger,
        idempotency_key=event.idempotency_key,
        callback_url=event.callback_url,
        deployment_version=event.deployment_version,
        metadata=event.metadata,
        replayed_from=event.replayed_from,
        replay_from_step=event.replay_from_step,
        queued_at=event.at,
        timeout_seconds=event.timeout_seconds,
    )


def _end_in_flight(steps: list[StepState], code: str, message: str, at: datetime | None) -> None:
    step = in_flight(steps)
    if step is not None:
        steps[-1] = replace(
            step, status="failed", error_code=code, error_message=message, completed_at=at
        )


def _started(state: RunState, steps: list[StepState], event: ev.RunStarted) -> RunState:
    if state.status == "running":
        _end_in_flight(steps, INTERRUPTED, f"attempt {state.attempt} was lost", event.at)
    return replace(
        state,
        status="running",
        attempt=event.attempt,
        started_at=state.started_at or event.at,
        clock_started_at=state.clock_started_at or event.at,
    )


def _step_started(state: RunState, steps: list[StepState], event: ev.StepStarted) -> RunState:
    steps.append(
        StepState(
            step_number=event.step_number,
            step_type=event.step_type,
            attempt=state.attempt,
            label=event.label,
            started_at=event.at,
            replayed=event.replayed,
        )
    )
    return state


def _step_completed(state: RunState, steps: list[StepState], event: ev.StepCompleted) -> RunState:
    step = steps[event.step_number]
    steps[event.step_number] = replace(
        step,
        status="completed",
        duration_ms=event.duration_ms,
        output=step.output if event.output is None else event.output,
        output_ref=event.output_ref or step.output_ref,
        completed_at=event.at,
    )
    return state


def _step_failed(state: RunState, steps: list[StepState], event: ev.StepFailed) -> RunState:
    steps[event.step_number] = replace(
        steps[event.step_number],
        status="failed",
        error_code=event.error_code,
        error_message=event.error_message,
        duration_ms=event.duration_ms,
        completed_at=event.at,
    )
    return state


def _llm_call(state: RunState, steps: list[StepState], event: ev.LlmCallRecorded) -> RunState:
    step = steps[event.step_number]
    steps[event.step_number] = replace(
        step,
        provider=event.provider,
        model=event.model,
        usage=step.usage.plus(event),
        llm_calls=step.llm_calls + 1,
        requested_tools=step.requested_tools + event.tool_calls,
        # A checkpoint step is named by its task's fingerprint, even if the task called a model.
        fingerprint=step.fingerprint if step.step_type == "checkpoint" else event.fingerprint,
        usage_estimated=step.usage_estimated or event.usage_estimated,
        over_reservation=step.over_reservation or event.over_reservation,
        output_capped=step.output_capped if event.output_capped is None else event.output_capped,
        replayed=step.replayed or event.replayed,
    )
    return replace(state, usage=state.usage.plus(event), llm_calls=state.llm_calls + 1)


def _tool_call(state: RunState, steps: list[StepState], event: ev.ToolCallRecorded) -> RunState:
    call = ToolCall(
        tool=event.tool,
        fingerprint=event.fingerprint,
        call_id=event.call_id,
        input=event.input,
        input_ref=event.input_ref,
        output=event.output,
        output_ref=event.output_ref,
        error=event.error,
        duration_ms=event.duration_ms,
    )
    # Shown under the model step that asked for it, not whichever step came last (attach.py).
    n = requesting_step(steps, event.step_number, event.tool, event.fingerprint, event.call_id)
    steps[n] = replace(steps[n], tool_calls=(*steps[n].tool_calls, call))
    same = event.fingerprint == state.last_tool_fingerprint
    return replace(
        state,
        last_tool_fingerprint=event.fingerprint,
        tool_repeats=state.tool_repeats + 1 if same else 1,
    )


def _checkpoint(state: RunState, steps: list[StepState], event: ev.CheckpointSaved) -> RunState:
    step = steps[event.step_number]
    steps[event.step_number] = replace(
        step,
        label=step.label or event.label,
        fingerprint=event.fingerprint,
        output=event.result,
        output_ref=event.result_ref,
    )
    return state


def _reserved(state: RunState, steps: list[StepState], event: ev.BudgetReserved) -> RunState:
    amount = Amount(event.amount_micro_usd, event.input_tokens, event.output_tokens)
    held = Reservation(event.reservation_id, amount, event.step_number, event.at)
    return replace(
        state, reservations=(*state.reservations, held), reserved=state.reserved + amount
    )


def _settled(state: RunState, steps: list[StepState], event: ev.BudgetSettled) -> RunState:
    held = state.reservation(event.reservation_id)
    assert held is not None  # check_folded refuses settling a reservation that is not open
    actual = Amount(event.actual_micro_usd, event.input_tokens, event.output_tokens)
    return replace(
        state,
        reservations=tuple(r for r in state.reservations if r is not held),
        reserved=state.reserved - held.amount,
        committed=state.committed + actual,
    )


def _cancel_requested(
    state: RunState, steps: list[StepState], event: ev.CancelRequested
) -> RunState:
    return replace(state, cancel_requested=True, cancel_reason=event.reason)


def _diverged(state: RunState, steps: list[StepState], event: ev.DivergenceDetected) -> RunState:
    # The first divergence is the one that matters: everything after it ran live.
    if state.diverged_at_step is not None:
        return state
    return replace(state, diverged_at_step=event.step_number)


def _completed(state: RunState, steps: list[StepState], event: ev.RunCompleted) -> RunState:
    return replace(
        state,
        status="completed",
        output=event.output,
        output_ref=event.output_ref,
        completed_at=event.at,
    )


def _ended(
    state: RunState,
    steps: list[StepState],
    status: RunStatus,
    code: str,
    message: str,
    at: datetime | None,
) -> RunState:
    _end_in_flight(steps, code, message, at)
    return replace(state, status=status, error_code=code, error_message=message, completed_at=at)


def _failed(state: RunState, steps: list[StepState], event: ev.RunFailed) -> RunState:
    return _ended(state, steps, "failed", event.code, event.message, event.at)


def _cancelled(state: RunState, steps: list[StepState], event: ev.RunCancelled) -> RunState:
    message = event.reason or state.cancel_reason or "the run was cancelled"
    return _ended(state, steps, "cancelled", "cancelled", message, event.at)


def _budget_exceeded(state: RunState, steps: list[StepState], event: ev.BudgetExceeded) -> RunState:
    message = event.message or "the run's budget is exhausted"
    return _ended(state, steps, "budget_exceeded", "budget_exceeded", message, event.at)


def _resumed(state: RunState, steps: list[StepState], event: ev.RunResumed) -> RunState:
    old = state.budget

    def keep(new: int | None, current: int | None) -> int | None:
        return current if new is None else new

    budget = Budget(
        keep(event.budget_micro_usd, old.micro_usd),
        keep(event.budget_input_tokens, old.input_tokens),
        keep(event.budget_output_tokens, old.output_tokens),
        keep(event.budget_total_tokens, old.total_tokens),
    )
    return replace(
        state,
        status="queued",
        budget=budget,
        error_code=None,
        error_message=None,
        completed_at=None,
        cancel_requested=False,
        cancel_reason=None,
        clock_started_at=None,  # a resumed run gets its time limit afresh
    )


def _attempt_lost(state: RunState, steps: list[StepState], event: ev.AttemptLost) -> RunState:
    why = f"attempt {event.attempt} was lost ({event.reason})"
    _end_in_flight(steps, INTERRUPTED, why, event.at)
    return replace(state, status="queued", recoveries=state.recoveries + 1)


def _callback(state: RunState, steps: list[StepState], event: ev.CallbackAttempted) -> RunState:
    if event.delivered:
        return replace(state, callback_status="delivered")
    return replace(state, callback_status="failed" if event.final else "retrying")


_HANDLERS: dict[type[Any], Handler] = {
    ev.RunStarted: _started,
    ev.StepStarted: _step_started,
    ev.StepCompleted: _step_completed,
    ev.StepFailed: _step_failed,
    ev.LlmCallRecorded: _llm_call,
    ev.ToolCallRecorded: _tool_call,
    ev.CheckpointSaved: _checkpoint,
    ev.BudgetReserved: _reserved,
    ev.BudgetSettled: _settled,
    ev.CancelRequested: _cancel_requested,
    ev.DivergenceDetected: _diverged,
    ev.RunCompleted: _completed,
    ev.RunFailed: _failed,
    ev.RunCancelled: _cancelled,
    ev.BudgetExceeded: _budget_exceeded,
    ev.RunResumed: _resumed,
    ev.AttemptLost: _attempt_lost,
    ev.CallbackAttempted: _callback,
    ev.AgentOutput: lambda state, steps, event: state,
}
