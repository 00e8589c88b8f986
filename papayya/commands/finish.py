"""Complete or fail a run: the events that end it as its code reported."""

from __future__ import annotations

from typing import Any, Final

from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.errors import Conflict
from papayya.runs import Runs

ERROR_TEXT: Final = 100_000
MESSAGE_TEXT: Final = 4000


def completed(output: Any = None, ref: str | None = None) -> list[ev.RunEvent]:
    return [ev.RunCompleted(output=output, output_ref=ref)]


def failed(code: str, message: str) -> list[ev.RunEvent]:
    return [ev.RunFailed(code=code, message=message[:MESSAGE_TEXT])]


def agent_raised(
    state: RunState, error_type: str, message: str, traceback: str
) -> list[ev.RunEvent]:
    """The agent raised: an error step with the traceback, then the run fails (agent_error)."""
    if state.in_flight is not None:
        raise Conflict(f"step {state.in_flight.step_number} is still in flight")
    n = state.next_step
    text = f"{message}\n\n{traceback}".strip()[:ERROR_TEXT]
    return [
        ev.StepStarted(step_number=n, step_type="error", label=error_type),
        ev.StepFailed(step_number=n, error_code="agent_error", error_message=text),
        ev.RunFailed(code="agent_error", message=f"{error_type}: {message}"),
    ]


def ending(state: RunState, events: list[ev.RunEvent]) -> list[ev.RunEvent]:
    """``events`` (one terminal event) unless the run already ended the same way: ending a run
    twice the same way is a no-op, a different way a ``Conflict``. A second ``completed``
    with another output is a different way: silently keeping the first would lose the second's
    answer without telling its caller. A second ``failed`` compares the status only, since a
    retried failure's message (a traceback, a timestamp) legitimately varies."""
    last = events[-1]
    target = "completed" if isinstance(last, ev.RunCompleted) else "failed"
    if state.status == target:
        if isinstance(last, ev.RunCompleted) and (last.output, last.output_ref) != (
            state.output,
            state.output_ref,
        ):
            raise Conflict(f"run {state.run_id} already completed with another output")
        return []
    if state.is_terminal:
        raise Conflict(f"run {state.run_id} is already {state.status}")
    return events


async def complete_run(
    runs: Runs, state: RunState, output: Any = None, ref: str | None = None
) -> RunState:
    return await runs.append_fresh(state, lambda s: ending(s, completed(output, ref)))


async def fail_run(runs: Runs, state: RunState, code: str, message: str) -> RunState:
    return await runs.append_fresh(state, lambda s: ending(s, failed(code, message)))
