"""The run fold and its rules, by example: each transition of DESIGN §4 and §6."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from papayya.domain import events as ev
from papayya.domain.attach import LOOK_BACK
from papayya.domain.fold import apply, fold, state_at
from papayya.domain.matcher import recorded_calls, tool_fingerprint
from papayya.domain.rules import check
from papayya.domain.state import RunState
from papayya.errors import (
    BudgetExhausted,
    IllegalTransition,
    InvalidEvent,
    InvalidInput,
    RunNotFound,
    StepLimitReached,
    StepNotFound,
)
from tests.support.strategies import llm, queued, tool

T0 = datetime(2030, 1, 1, tzinfo=UTC)
T1 = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)


def started(**kw: Any) -> list[ev.RunEvent]:
    return [queued(**kw), ev.RunStarted(attempt=1)]


def step(n: int, kind: ev.StepType = "response", *middle: ev.RunEvent) -> list[ev.RunEvent]:
    return [ev.StepStarted(step_number=n, step_type=kind), *middle, ev.StepCompleted(step_number=n)]


def refused(
    events: list[ev.RunEvent],
    event: ev.RunEvent,
    error: type[Exception] = IllegalTransition,
    match: str | None = None,
) -> None:
    state = fold(events)
    with pytest.raises(error, match=match):
        check(state, event)
    with pytest.raises(error, match=match):
        fold([*events, event])


def test_a_run_that_completes() -> None:
    events = [
        queued(input={"q": 1}, at=T0),
        ev.RunStarted(attempt=1, at=T0),
        *step(
            0,
            "tool_call",
            llm(
                0,
                input_tokens=10,
                cached_input_tokens=5,
                output_tokens=3,
                reasoning_tokens=2,
                cost_micro_usd=42,
            ),
        ),
        tool(0, input={"q": 1}, output=["hit"]),
        *step(1, "response", llm(1, cost_micro_usd=8)),
        ev.RunCompleted(output="done", at=T1),
    ]
    state = fold(events)
    assert (state.status, state.output, state.attempt) == ("completed", "done", 1)
    assert state.version == len(events)
    assert (state.queued_at, state.started_at, state.completed_at) == (T0, T0, T1)
    assert state.usage.cost_micro_usd == 50
    assert (state.usage.total_input_tokens, state.usage.total_output_tokens) == (15, 5)
    assert state.llm_calls == 2 and state.next_step == 2 and state.in_flight is None
    first = state.steps[0]
    assert (first.status, first.model, first.usage.cost_micro_usd, first.attempt) == (
        "completed",
        "gpt-x",
        42,
        1,
    )
    assert [c.output for c in first.tool_calls] == [["hit"]]
    assert state.is_terminal


def test_first_event_must_be_run_queued() -> None:
    with pytest.raises(IllegalTransition, match="has not been queued"):
        fold([ev.RunStarted(attempt=1)])
    with pytest.raises(IllegalTransition, match="already queued"):
        fold([queued(), queued()])


def test_steps_are_numbered_from_zero_without_gaps() -> None:
    refused(started(), ev.StepStarted(step_number=1, step_type="response"), match="next step is 0")
    events = [*started(), *step(0)]
    refused(events, ev.StepStarted(step_number=0, step_type="response"), match="next step is 1")


def test_one_step_at_a_time() -> None:
    events = [*started(), ev.StepStarted(step_number=0, step_type="response")]
    assert fold(events).in_flight is not None
    refused(events, ev.StepStarted(step_number=1, step_type="response"), match="still in flight")
    refused(events, ev.RunCompleted(), match="still in flight")


def test_only_the_step_in_flight_can_end() -> None:
    refused(started(), ev.StepCompleted(step_number=0), match="not in flight")
    events = [*started(), *step(0)]
    refused(events, ev.StepFailed(step_number=0, error_code="x"), match="not in flight")


def test_a_failed_step_does_not_fail_the_run() -> None:
    events = [
        *started(),
        ev.StepStarted(step_number=0, step_type="error"),
        ev.StepFailed(step_number=0, error_code="tool_error", error_message="nope"),
    ]
    state = fold(events)
    assert state.status == "running"
    assert (state.steps[0].status, state.steps[0].error_code) == ("failed", "tool_error")


def test_steps_need_a_running_run() -> None:
    refused([queued()], ev.StepStarted(step_number=0, step_type="response"), match="is queued")


@pytest.mark.parametrize(
    "ending", [ev.RunCompleted(), ev.RunFailed(code="x"), ev.RunCancelled(), ev.BudgetExceeded()]
)
@pytest.mark.parametrize(
    "late",
    [
        ev.RunCompleted(),
        ev.RunFailed(code="x"),
        ev.RunCancelled(),
        ev.BudgetExceeded(),
        ev.CancelRequested(),
        ev.RunStarted(attempt=2),
        ev.StepStarted(step_number=1, step_type="response"),
        ev.DivergenceDetected(step_number=0),
    ],
)
def test_nothing_but_accounting_follows_the_end(ending: ev.RunEvent, late: ev.RunEvent) -> None:
    refused([*started(), *step(0), ending], late)


def test_money_spent_is_recorded_after_the_end() -> None:
    """A call in flight when the run ends is still paid for and settled."""
    events = [
        *started(budget_micro_usd=100),
        ev.StepStarted(step_number=0, step_type="response"),
        ev.BudgetReserved(reservation_id="r", amount_micro_usd=60, step_number=0),
        ev.CancelRequested(reason="user"),
        ev.RunCancelled(),
        llm(0, cost_micro_usd=30),
        ev.BudgetSettled(reservation_id="r", actual_micro_usd=30),
    ]
    state = fold(events)
    assert (state.status, state.error_code, state.error_message) == (
        "cancelled",
        "cancelled",
        "user",
    )
    assert (state.steps[0].status, state.steps[0].error_code) == ("failed", "cancelled")
    assert state.usage.cost_micro_usd == state.committed.micro_usd == 30
    assert state.reservations == () and state.reserved.micro_usd == 0
    refused(events, llm(1), match="has not started")
    refused(events, ev.BudgetSettled(reservation_id="r", actual_micro_usd=1), match="not open")


def test_recovery_starts_a_new_attempt_and_abandons_the_step_in_flight() -> None:
    events = [
        *started(),
        *step(0),
        ev.StepStarted(step_number=1, step_type="tool_call"),
        ev.RunStarted(attempt=2, worker="w2"),
    ]
    state = fold(events)
    assert (state.status, state.attempt, state.next_step) == ("running", 2, 2)
    assert (state.steps[1].status, state.steps[1].error_code) == ("failed", "interrupted")
    state = apply(state, ev.StepStarted(step_number=2, step_type="tool_call"))
    assert state.steps[2].attempt == 2
    refused(events, ev.RunStarted(attempt=2), match="next attempt is 3")
    refused([queued()], ev.RunStarted(attempt=2), match="next attempt is 1")


def test_budget_is_a_hard_cap_on_reservations() -> None:
    events = [
        *started(budget_micro_usd=100, budget_total_tokens=50),
        ev.BudgetReserved(reservation_id="a", amount_micro_usd=60),
    ]
    refused(
        events,
        ev.BudgetReserved(reservation_id="b", amount_micro_usd=41),
        BudgetExhausted,
        "usd budget",
    )
    refused(
        events,
        ev.BudgetReserved(
            reservation_id="b", amount_micro_usd=1, input_tokens=40, output_tokens=11
        ),
        BudgetExhausted,
        "total_tokens",
    )
    refused(events, ev.BudgetReserved(reservation_id="a", amount_micro_usd=1), match="already open")
    events += [
        ev.BudgetReserved(reservation_id="b", amount_micro_usd=40),
        ev.BudgetSettled(reservation_id="a", actual_micro_usd=10),
    ]
    state = fold(events)
    assert (state.committed.micro_usd, state.reserved.micro_usd) == (10, 40)
    check(state, ev.BudgetReserved(reservation_id="c", amount_micro_usd=50))
    refused(events, ev.BudgetReserved(reservation_id="c", amount_micro_usd=51), BudgetExhausted)


def test_reservations_need_a_running_run_and_an_existing_step() -> None:
    refused(
        [queued()], ev.BudgetReserved(reservation_id="a", amount_micro_usd=1), match="is queued"
    )
    refused(
        started(),
        ev.BudgetReserved(reservation_id="a", amount_micro_usd=1, step_number=0),
        match="has not started",
    )


def test_budget_exceeded_resumes_with_a_higher_budget() -> None:
    events = [
        *started(budget_micro_usd=100),
        ev.StepStarted(step_number=0, step_type="response"),
        ev.BudgetReserved(reservation_id="a", amount_micro_usd=90),
        ev.BudgetSettled(reservation_id="a", actual_micro_usd=90),
        ev.BudgetExceeded(message="out of money", limit="usd"),
    ]
    state = fold(events)
    assert (state.status, state.error_code, state.steps[0].error_code) == (
        "budget_exceeded",
        "budget_exceeded",
        "budget_exceeded",
    )
    refused(events, ev.RunResumed(budget_micro_usd=90), match="does not exceed the 90")
    events += [ev.RunResumed(budget_micro_usd=500)]
    state = fold(events)
    assert (state.status, state.budget.micro_usd, state.error_code, state.completed_at) == (
        "queued",
        500,
        None,
        None,
    )
    state = apply(state, ev.RunStarted(attempt=2))
    assert state.status == "running" and state.next_step == 1
    refused([*started(), ev.RunFailed(code="x")], ev.RunResumed(), match="is failed")


def test_cancellation() -> None:
    events = [*started(), ev.CancelRequested(reason="stop")]
    assert fold(events).cancel_requested
    refused(events, ev.CancelRequested(), match="already requested")
    refused(events, ev.StepStarted(step_number=0, step_type="response"), match="being cancelled")
    state = fold([*events, ev.RunCancelled()])
    assert (state.status, state.error_message) == ("cancelled", "stop")
    # A queued run is cancelled without a worker.
    assert fold([queued(), ev.RunCancelled(reason="r")]).status == "cancelled"


def test_max_steps() -> None:
    events = [*started(max_steps=1), *step(0)]
    refused(
        events,
        ev.StepStarted(step_number=1, step_type="response"),
        StepLimitReached,
        "max_steps of 1",
    )
    assert StepLimitReached.code == "max_steps_exceeded"


def test_checkpoints() -> None:
    events = [*started(), ev.StepStarted(step_number=0, step_type="checkpoint", label="search")]
    saved = ev.CheckpointSaved(step_number=0, label="search", fingerprint="fp", result=[1])
    state = fold([*events, saved, llm(0), ev.StepCompleted(step_number=0, duration_ms=5)])
    assert (state.steps[0].output, state.steps[0].fingerprint, state.steps[0].duration_ms) == (
        [1],
        "fp",
        5,
    )
    refused([*events, saved], saved, match="already has its checkpoint")
    refused([*started(), *step(0)], saved, match="not in flight")
    refused(
        [*started(), ev.StepStarted(step_number=0, step_type="response")],
        saved,
        match="is a response step",
    )


def test_tool_calls_go_to_the_latest_step_and_count_repeats() -> None:
    events = [*started(), *step(0, "tool_call"), tool(0, fingerprint="a"), tool(0, fingerprint="a")]
    state = fold(events)
    assert (state.last_tool_fingerprint, state.tool_repeats, len(state.steps[0].tool_calls)) == (
        "a",
        2,
        2,
    )
    assert apply(state, tool(0, fingerprint="b")).tool_repeats == 1
    refused([*events, *step(1)], tool(0), match="not the latest step")
    refused(started(), tool(0), match="not the latest step")


def test_first_divergence_is_kept() -> None:
    state = fold(
        [*started(), ev.DivergenceDetected(step_number=3), ev.DivergenceDetected(step_number=5)]
    )
    assert state.diverged_at_step == 3
    refused([queued()], ev.DivergenceDetected(step_number=0), match="is queued")


def test_fold_continues_from_an_initial_state() -> None:
    events = [*started(), *step(0), *step(1), ev.RunCompleted()]
    assert fold(events[3:], initial=fold(events[:3])) == fold(events)


def test_state_at_a_step() -> None:
    events = [
        *started(),
        *step(0, "tool_call", llm(0)),
        tool(0, output=1),
        ev.BudgetReserved(reservation_id="r", amount_micro_usd=0),
        *step(1, "response"),
        ev.RunCompleted(output="x"),
    ]
    at0 = state_at(events, 0)
    assert at0 == fold(events[:6]) and len(at0.steps[0].tool_calls) == 1
    assert state_at(events, 1) == fold(events[:9])
    assert state_at(events, 1).status == "running"


def test_state_at_a_step_cut_short_includes_what_ended_it() -> None:
    events = [
        *started(),
        ev.StepStarted(step_number=0, step_type="response"),
        ev.RunStarted(attempt=2),
        ev.CancelRequested(),
    ]
    assert state_at(events, 0) == fold(events[:4])
    events = [
        *started(),
        ev.StepStarted(step_number=0, step_type="response"),
        ev.RunFailed(code="x"),
    ]
    assert state_at(events, 0).status == "failed"


def test_state_at_a_step_in_flight_is_the_state_so_far() -> None:
    events = [*started(), ev.StepStarted(step_number=0, step_type="response"), llm(0)]
    assert state_at(events, 0) == fold(events)


def test_state_at_a_missing_step() -> None:
    with pytest.raises(StepNotFound, match="no step 2"):
        state_at([*started(), *step(0), *step(1)], 2)
    with pytest.raises(StepNotFound):
        state_at([], 0)


@pytest.mark.parametrize("bad", [-1, True, 1.0, "0", None])
def test_state_at_rejects_bad_step_numbers(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="step must be"):
        state_at(started(), bad)


@pytest.mark.parametrize("bad", ["events", b"x", {"a": 1}, 3, None])
def test_fold_rejects_things_that_are_not_event_lists(bad: Any) -> None:
    with pytest.raises(InvalidInput, match="iterable of run events"):
        fold(bad)
    with pytest.raises(InvalidInput, match="iterable of run events"):
        state_at(bad, 0)


def test_fold_rejects_other_events_and_bad_initial_states() -> None:
    agent = ev.AgentDefined(agent_id="a", project_id="p", name="A", slug="a")
    with pytest.raises(InvalidInput, match="AgentDefined"):
        fold([queued(), agent])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="expected a run event, got dict"):
        fold([{"type": "RunQueued"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="initial must be"):
        fold([], initial="state")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a known run event"):
        fold([queued(), ev.RunEvent()])


def test_nothing_to_fold_is_a_missing_run() -> None:
    with pytest.raises(RunNotFound):
        fold([])
    assert fold([], initial=fold([queued()])).version == 1


def test_check_rejects_bad_input() -> None:
    state = fold(started())
    with pytest.raises(InvalidInput, match="state must be"):
        check("state", ev.RunStarted(attempt=2))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="expected a run event"):
        check(state, ev.AgentDefined(agent_id="a", project_id="p", name="A", slug="a"))  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=">= 0"):
        check(state, ev.StepStarted(step_number=-1, step_type="response"))
    with pytest.raises(InvalidEvent, match="Invalid enum value"):
        check(state, ev.StepStarted(step_number=0, step_type="nap"))  # type: ignore[arg-type]
    check(None, queued())
    with pytest.raises(IllegalTransition, match="not been queued"):
        check(None, ev.RunStarted(attempt=1))


def test_states_are_frozen() -> None:
    state = fold(started())
    with pytest.raises(AttributeError):
        state.status = "failed"  # type: ignore[misc]
    assert isinstance(state, RunState)


def test_resume_counts_open_reservations_as_spent() -> None:
    """A reservation still open may settle in full, so the new budget must cover it too."""
    events = [
        *started(budget_micro_usd=100),
        ev.BudgetReserved(reservation_id="a", amount_micro_usd=70),
        ev.BudgetExceeded(message="out of money"),
    ]
    refused(events, ev.RunResumed(budget_micro_usd=70), match="70 already spent or held")
    assert fold([*events, ev.RunResumed(budget_micro_usd=71)]).status == "queued"


def asked(n: int, *calls: dict[str, Any]) -> list[ev.RunEvent]:
    return step(n, "tool_call", llm(n, tool_calls=calls))


def test_a_tool_call_belongs_to_the_model_step_that_asked_for_it_by_id() -> None:
    # The README tour: the model asks for lookup, a task is checkpointed, then lookup runs.
    events = [
        *started(),
        *asked(0, {"id": "call_1", "name": "lookup", "arguments": {"city": "x"}}),
        *step(1, "checkpoint"),
        tool(1, tool="lookup", call_id="call_1", fingerprint=tool_fingerprint("lookup", {})),
    ]
    state = fold(events)
    assert [len(s.tool_calls) for s in state.steps] == [1, 0]
    assert state.steps[0].step_type == "tool_call"


def test_without_an_id_a_tool_call_is_matched_by_name_and_arguments_then_by_name() -> None:
    paris = {"city": "Paris"}
    events = [
        *started(),
        *asked(0, {"id": "a", "name": "lookup", "arguments": paris}),
        *asked(1, {"id": "b", "name": "lookup", "arguments": {"city": "Rome"}}),
        *step(2, "checkpoint"),
        tool(2, tool="lookup", fingerprint=tool_fingerprint("lookup", paris)),
        tool(2, tool="lookup", fingerprint=tool_fingerprint("lookup", {"city": "Oslo"})),
        tool(2, tool="unasked", fingerprint=tool_fingerprint("unasked", {})),
    ]
    state = fold(events)
    assert [[c.fingerprint for c in s.tool_calls] for s in state.steps] == [
        [tool_fingerprint("lookup", paris)],
        [tool_fingerprint("lookup", {"city": "Oslo"})],  # the latest step that asked for it
        [tool_fingerprint("unasked", {})],  # nobody asked: the step that was latest
    ]
    # The event keeps the step it ran in: the recording's order is unchanged.
    assert [c.step_number for c in recorded_calls([*events, *step(3)])] == [0, 1, 2, 2, 2]


def test_a_tool_call_is_not_attached_to_a_step_after_the_one_it_ran_in_nor_too_far_back() -> None:
    far = [*started(), *asked(0, {"id": "x", "name": "lookup", "arguments": {}})]
    for n in range(1, LOOK_BACK + 2):
        far += step(n)
    late = LOOK_BACK + 1
    state = fold([*far, tool(late, tool="lookup", call_id="x")])
    assert len(state.steps[late].tool_calls) == 1 and not state.steps[0].tool_calls


def test_a_step_answered_from_a_recording_is_marked_replayed() -> None:
    state = fold([*started(), *step(0, "response", llm(0, replayed=True)), *step(1)])
    assert [s.replayed for s in state.steps] == [True, False]


def test_only_a_replay_not_yet_started_takes_copies_of_its_sources_steps_below_from_step() -> None:
    def copy(n: int) -> ev.StepStarted:
        return ev.StepStarted(step_number=n, step_type="response", replayed=True)

    replay = [queued(replayed_from="src", replay_from_step=2)]
    both = [*replay, copy(0), ev.StepCompleted(step_number=0), copy(1), llm(1, replayed=True)]
    state = fold([*both, ev.StepCompleted(step_number=1), ev.RunStarted(attempt=1)])
    assert [(s.step_number, s.replayed, s.status) for s in state.steps] == [
        (0, True, "completed"),
        (1, True, "completed"),
    ] and state.next_step == 2
    refused([queued()], copy(0), match="only a replay")
    refused(replay, copy(2), match="before 2 only")
    refused([*replay, ev.RunStarted(attempt=1)], copy(0), match="only a replay")
    refused(both, ev.RunStarted(attempt=1), match="has not ended")
    # A copied step is no licence for a step of the replay's own before it starts.
    refused([*replay, copy(0), ev.StepCompleted(step_number=0)], ev.StepStarted(
        step_number=1, step_type="response"), match="queued")  # fmt: skip
