"""Loop detection (pure): how many times in a row the model asked for the same tool call."""

from __future__ import annotations

from collections.abc import Sequence

from papayya.domain.matcher import tool_fingerprint
from papayya.domain.state import StepState

DEFAULT_THRESHOLD = 5


def repeated_tool_calls(steps: Sequence[StepState]) -> int:
    """The length of the run of identical requested tool calls (name and canonical
    arguments) that ends with the latest one; 0 if the model asked for none."""
    calls = [
        tool_fingerprint(str(call.get("name")), call.get("arguments"))
        for step in steps
        for call in step.requested_tools
    ]
    if not calls:
        return 0
    count = 1
    for previous in reversed(calls[:-1]):
        if previous != calls[-1]:
            break
        count += 1
    return count
