"""Which events a run accepts in which state (DESIGN §4, §6).

``queued → running → completed | failed | cancelled | budget_exceeded``; ``budget_exceeded``
goes back to ``queued`` on ``RunResumed``; ``RunStarted`` on a running run is a recovery.
Accounting that reports money already spent (``LlmCallRecorded`` for an existing step,
``BudgetSettled`` for an open reservation) is accepted in every state, terminal ones included:
a call in flight when the run ends must still be paid for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from papayya.domain import events as ev
from papayya.domain.bounds import MAX_STEPS
from papayya.domain.state import Amount, RunState, StepState, in_flight
from papayya.errors import BudgetExhausted, IllegalTransition, InvalidInput, StepLimitReached

Steps = Sequence[StepState]


def check(state: RunState | None, event: ev.RunEvent) -> None:
    """Raise unless ``event`` may be appended to the run whose state is ``state`` (``None``
    for a run with no events yet).

    ``InvalidInput``/``InvalidEvent`` for a malformed event, ``IllegalTransition`` (or its
    ``StepLimitReached``) for one the run does not accept now, ``BudgetExhausted`` for a
    reservation the budget does not cover.
    """
    if state is not None and not isinstance(state, RunState):
        raise InvalidInput("state must be a RunState or None")
    if not isinstance(event, ev.RunEvent):
        raise InvalidInput(f"expected a run event, got {type(event).__name__}")
    ev.validate_event(event)
    check_folded(state, state.steps if state else (), event)


def check_folded(state: RunState | None, steps: Steps, event: ev.RunEvent) -> None:
    """``check`` without validating the event, with the steps passed apart: the fold keeps
    them in a list of its own while it runs (``state.steps`` is stale there)."""
    if state is None:
        if not isinstance(event, ev.RunQueued):
            _refuse(event, "the run has not been queued")
        return
    _RULES.get(type(event), _unknown)(state, steps, event)


def _refuse(event: ev.RunEvent, why: str) -> None:
    raise IllegalTransition(f"{type(event).__name__} is not allowed: {why}")


def _require(state: RunState, event: ev.RunEvent, *statuses: str) -> None:
    if state.status not in statuses:
        _refuse(event, f"run {state.run_id} is {state.status}")


def _queued(state: RunState, steps: Steps, event: ev.RunQueued) -> None:
    _refuse(event, f"run {state.run_id} was already queued")


def _started(state: RunState, steps: Steps, event: ev.RunStarted) -> None:
    _require(state, event, "queued", "running")
    if event.attempt != state.attempt + 1:
        _refuse(event, f"the next attempt is {state.attempt + 1}, not {event.attempt}")
    if state.status == "queued" and (current := in_flight(steps)) is not None:
        _refuse(event, f"copied step {current.step_number} has not ended")


def _copying(state: RunState, steps: Steps, n: int) -> bool:
    """Whether step ``n`` is a replay's copy of its source's step, written with its queuing:
    such steps are recorded before the run ever starts."""
    return (
        state.status == "queued"
        and state.attempt == 0
        and 0 <= n < len(steps)
        and (steps[n].replayed)
    )


def _replayed_step(state: RunState, steps: Steps, event: ev.StepStarted) -> None:
    until = state.replay_from_step
    if state.status != "queued" or state.attempt != 0 or until is None:
        _refuse(event, "only a replay that has not started copies its source's steps")
    elif event.step_number >= until:
        _refuse(event, f"the replay copies steps before {until} only")
    if steps and not steps[-1].replayed:
        _refuse(event, "copied steps come before the replay's own")


def _step_started(state: RunState, steps: Steps, event: ev.StepStarted) -> None:
    if event.replayed:
        _replayed_step(state, steps, event)
    else:
        _require(state, event, "running")
    if state.cancel_requested:
        _refuse(event, "the run is being cancelled")
    current = in_flight(steps)
    if current is not None:
        _refuse(event, f"step {current.step_number} is still in flight")
    if event.step_number != len(steps):
        _refuse(event, f"the next step is {len(steps)}, not {event.step_number}")
    if not event.replayed and state.max_steps is not None and len(steps) >= state.max_steps:
        raise StepLimitReached(f"the run has reached its max_steps of {state.max_steps}")
    if len(steps) >= MAX_STEPS:
        raise StepLimitReached(f"a run has at most {MAX_STEPS} steps")


def _step_ended(state: RunState, steps: Steps, event: ev.StepCompleted | ev.StepFailed) -> None:
    if not _copying(state, steps, event.step_number):
        _require(state, event, "running")
    current = in_flight(steps)
    if current is None or current.step_number != event.step_number:
        _refuse(event, f"step {event.step_number} is not in flight")


def _llm_call(state: RunState, steps: Steps, event: ev.LlmCallRecorded) -> None:
    if event.step_number >= len(steps):
        _refuse(event, f"step {event.step_number} has not started")


def _tool_call(state: RunState, steps: Steps, event: ev.ToolCallRecorded) -> None:
    if not _copying(state, steps, event.step_number):
        _require(state, event, "running")
    if not steps or event.step_number != steps[-1].step_number:
        _refuse(event, f"step {event.step_number} is not the latest step")


def _checkpoint(state: RunState, steps: Steps, event: ev.CheckpointSaved) -> None:
    if not _copying(state, steps, event.step_number):
        _require(state, event, "running")
    current = in_flight(steps)
    if current is None or current.step_number != event.step_number:
        _refuse(event, f"step {event.step_number} is not in flight")
    elif current.step_type != "checkpoint":
        _refuse(event, f"step {event.step_number} is a {current.step_type} step")
    elif current.fingerprint is not None:
        _refuse(event, f"step {event.step_number} already has its checkpoint")


def _reserved(state: RunState, steps: Steps, event: ev.BudgetReserved) -> None:
    _require(state, event, "running")
    if state.reservation(event.reservation_id) is not None:
        _refuse(event, f"reservation {event.reservation_id} is already open")
    if event.step_number is not None and event.step_number >= len(steps):
        _refuse(event, f"step {event.step_number} has not started")
    wanted = Amount(event.amount_micro_usd, event.input_tokens, event.output_tokens)
    limit = state.budget.exceeded_by(state.committed + state.reserved + wanted)
    if limit is not None:
        raise BudgetExhausted(f"the run's {limit} budget does not cover this call")


def _settled(state: RunState, steps: Steps, event: ev.BudgetSettled) -> None:
    if state.reservation(event.reservation_id) is None:
        _refuse(event, f"reservation {event.reservation_id} is not open")


def _cancel_requested(state: RunState, steps: Steps, event: ev.CancelRequested) -> None:
    _require(state, event, "queued", "running")
    if state.cancel_requested:
        _refuse(event, "cancellation was already requested")


def _diverged(state: RunState, steps: Steps, event: ev.DivergenceDetected) -> None:
    _require(state, event, "running")


def _completed(state: RunState, steps: Steps, event: ev.RunCompleted) -> None:
    _require(state, event, "running")
    current = in_flight(steps)
    if current is not None:
        _refuse(event, f"step {current.step_number} is still in flight")


def _ended(state: RunState, steps: Steps, event: ev.RunEvent) -> None:
    # Failing, cancelling or refusing for budget may cut a step short; the fold closes it.
    _require(state, event, "queued", "running")


def _resumed(state: RunState, steps: Steps, event: ev.RunResumed) -> None:
    _require(state, event, "budget_exceeded")
    # Open reservations may still settle in full, so they count as spent here.
    spent = state.committed + state.reserved
    for name, limit, used in (
        ("budget_micro_usd", event.budget_micro_usd, spent.micro_usd),
        ("budget_input_tokens", event.budget_input_tokens, spent.input_tokens),
        ("budget_output_tokens", event.budget_output_tokens, spent.output_tokens),
        ("budget_total_tokens", event.budget_total_tokens, spent.total_tokens),
    ):
        if limit is not None and limit <= used:
            _refuse(event, f"{name} {limit} does not exceed the {used} already spent or held")


def _attempt_lost(state: RunState, steps: Steps, event: ev.AttemptLost) -> None:
    _require(state, event, "running")
    if event.attempt != state.attempt:
        _refuse(event, f"the run is in attempt {state.attempt}, not {event.attempt}")


def _callback(state: RunState, steps: Steps, event: ev.CallbackAttempted) -> None:
    if not state.is_terminal:
        _refuse(event, f"run {state.run_id} is {state.status}: callbacks follow a terminal status")


def _output(state: RunState, steps: Steps, event: ev.AgentOutput) -> None:
    if event.attempt > state.attempt:  # reported after the fact, in any state
        _refuse(event, f"attempt {event.attempt} has not started")


def _unknown(state: RunState, steps: Steps, event: ev.RunEvent) -> None:
    raise InvalidInput(f"{type(event).__name__} is not a known run event")


_RULES: dict[type[Any], Callable[[RunState, Steps, Any], None]] = {
    ev.RunQueued: _queued,
    ev.RunStarted: _started,
    ev.StepStarted: _step_started,
    ev.StepCompleted: _step_ended,
    ev.StepFailed: _step_ended,
    ev.LlmCallRecorded: _llm_call,
    ev.ToolCallRecorded: _tool_call,
    ev.CheckpointSaved: _checkpoint,
    ev.BudgetReserved: _reserved,
    ev.BudgetSettled: _settled,
    ev.CancelRequested: _cancel_requested,
    ev.DivergenceDetected: _diverged,
    ev.RunCompleted: _completed,
    ev.RunFailed: _ended,
    ev.RunCancelled: _ended,
    ev.BudgetExceeded: _ended,
    ev.RunResumed: _resumed,
    ev.AttemptLost: _attempt_lost,
    ev.CallbackAttempted: _callback,
    ev.AgentOutput: _output,
}
