"""Loop detection counts the run of identical requested tool calls ending with the latest."""

from __future__ import annotations

from papayya.domain.state import StepState
from papayya.metering.loops import repeated_tool_calls


def step(n: int, *calls: tuple[str, dict[str, object]]) -> StepState:
    requested = tuple({"name": name, "arguments": args} for name, args in calls)
    return StepState(step_number=n, step_type="tool_call", attempt=1, requested_tools=requested)


def test_counts_only_the_trailing_repeat() -> None:
    same = ("search", {"q": "x"})
    assert repeated_tool_calls([]) == 0
    assert repeated_tool_calls([step(0)]) == 0
    assert repeated_tool_calls([step(0, same), step(1, same), step(2, same)]) == 3
    assert repeated_tool_calls([step(0, same), step(1, ("search", {"q": "y"})), step(2, same)]) == 1
    # Arguments compare canonically: key order does not matter.
    assert (
        repeated_tool_calls([step(0, ("f", {"a": 1, "b": 2})), step(1, ("f", {"b": 2, "a": 1}))])
        == 2
    )
    # A step without tool calls between repeats does not break the run of calls.
    assert repeated_tool_calls([step(0, same), step(1), step(2, same, same)]) == 3
