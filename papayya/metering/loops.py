"""Loop detection (pure): how many times in a row the model asked for the same tool call."""

from __future__ import annotations

from collections.abc import Sequence

from papayya.domain.matcher import tool_fingerprint
from papayya.domain.state import StepState

DEFAULT_THRESHOLD = 5


def repeated_tool_calls(steps: Sequence[StepState]) -> int:
    """The length of the run of identical requested tool calls (name and canonical
    arguments) that ends with the latest one; 0 if the model asked for none.

    Walks back from the end and stops at the first different call, so it costs the length
    of the repeat, not of the run."""
    last: str | None = None
    count = 0
    for step in reversed(steps):
        for call in reversed(step.requested_tools):
            fingerprint = tool_fingerprint(str(call.get("name")), call.get("arguments"))
            if last is None:
                last = fingerprint
            elif fingerprint != last:
                return count
            count += 1
    return count
