"""Which step a tool call belongs to (pure): the model step whose response asked for it.

A ``ToolCallRecorded`` names the run's latest step when the tool ran (its ``step_number``
keeps that meaning: the recording's order, which replay matches, follows it). The step it is
shown under is found here, so streams recorded before this existed read the same way:

1. the step whose model response carried the call's id (OpenAI ``tool_calls[].id``,
   Anthropic ``tool_use.id``);
2. else the latest step that asked for this tool with these arguments;
3. else the latest step that asked for this tool at all (agent code often calls the tool
   with arguments of its own, as the README tour does);
4. else the step that was latest when it ran.

Only the ``LOOK_BACK`` steps up to that latest one are searched, so a fold stays linear in a
long run whose agent calls tools no model asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from papayya.domain.matcher import tool_fingerprint
from papayya.domain.state import StepState
from papayya.errors import InvalidInput

LOOK_BACK: Final = 64


def requesting_step(
    steps: Sequence[StepState], latest: int, tool: str, fingerprint: str, call_id: str | None
) -> int:
    """The number of the step a tool call that ran during step ``latest`` belongs to."""
    window = range(min(latest, len(steps) - 1), max(-1, latest - LOOK_BACK - 1), -1)
    if call_id:
        for n in window:
            if any(r.get("id") == call_id for r in steps[n].requested_tools):
                return n
    named = [n for n in window if any(_named(r, tool) for r in steps[n].requested_tools)]
    for n in named:
        for r in steps[n].requested_tools:
            if _named(r, tool) and _same_call(r, tool, fingerprint):
                return n
    return named[0] if named else latest


def _named(request: dict[str, Any], tool: str) -> bool:
    return request.get("name") == tool


def _same_call(request: dict[str, Any], tool: str, fingerprint: str) -> bool:
    try:
        return tool_fingerprint(tool, request.get("arguments")) == fingerprint
    except InvalidInput:  # arguments the model sent that are not JSON: no match
        return False
