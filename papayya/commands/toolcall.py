"""Record a tool call that ran: on the run's latest step (usually the ``tool_call`` step of the
model call that asked for it), as the fold's rules want. A tool called before any step exists
gets a ``tool_call`` step of its own, labelled with the tool's name, so no call goes
unrecorded."""

from __future__ import annotations

from typing import Any, Final

from papayya.domain import events as ev
from papayya.domain.state import RunState

ERROR_TEXT: Final = 100_000


def tool_call_events(
    state: RunState,
    tool: str,
    fingerprint: str,
    *,
    call_id: str | None = None,
    input: Any = None,
    input_ref: str | None = None,
    output: Any = None,
    output_ref: str | None = None,
    error: str | None = None,
    duration_ms: float = 0.0,
) -> list[ev.RunEvent]:
    own_step = not state.steps
    n = state.next_step if own_step else state.steps[-1].step_number
    call = ev.ToolCallRecorded(
        step_number=n, tool=tool, fingerprint=fingerprint, call_id=call_id,
        input=input, input_ref=input_ref, output=output, output_ref=output_ref,
        error=error[:ERROR_TEXT] if error else None, duration_ms=duration_ms,
    )  # fmt: skip
    if not own_step:
        return [call]
    started = ev.StepStarted(step_number=n, step_type="tool_call", label=tool)
    return [started, call, ev.StepCompleted(step_number=n, duration_ms=duration_ms)]
