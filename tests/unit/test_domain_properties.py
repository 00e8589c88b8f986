"""Properties of the fold over random runs drawn from an independent model of the rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papayya.domain import events as ev
from papayya.domain.fold import apply, fold, state_at
from papayya.domain.rules import check
from papayya.domain.state import TERMINAL, Amount, RunState
from papayya.errors import BudgetExhausted, IllegalTransition
from tests.support.strategies import legal_runs, llm, queued

Run = tuple[list[ev.RunEvent], RunState]


@given(legal_runs())
def test_legal_runs_fold_and_fold_is_apply_repeated(run: Run) -> None:
    events, incremental = run
    state = fold(events)
    assert state == incremental
    assert state.version == len(events)


@given(legal_runs())
def test_invariants_of_every_folded_run(run: Run) -> None:
    _, state = run
    assert [s.step_number for s in state.steps] == list(range(len(state.steps)))
    assert all(s.status != "running" for s in state.steps[:-1])
    assert state.in_flight is None or state.status == "running"
    assert state.reserved == sum((r.amount for r in state.reservations), Amount())
    if state.budget.micro_usd is not None:
        # DESIGN §6: committed never passes the limit when settlements stay within reservations.
        assert state.committed.micro_usd + state.reserved.micro_usd <= state.budget.micro_usd
    assert state.usage.cost_micro_usd == sum(s.usage.cost_micro_usd for s in state.steps)
    if state.max_steps is not None:
        assert len(state.steps) <= state.max_steps


@given(legal_runs(), st.data())
def test_a_prefix_folds_and_continues(run: Run, data: st.DataObject) -> None:
    events, state = run
    cut = data.draw(st.integers(1, len(events)))
    assert fold(events[cut:], initial=fold(events[:cut])) == state


@given(legal_runs())
def test_state_at_is_the_fold_of_the_prefix_that_last_changed_the_step(run: Run) -> None:
    """The oracle works on states: the last prefix, before a later step starts, whose last
    event changed step N."""
    events, final = run
    prefixes = [fold(events[:k]) for k in range(1, len(events) + 1)]
    for n in range(len(final.steps)):
        expected = None
        for before, after in zip([None, *prefixes], prefixes, strict=False):
            if len(after.steps) > n + 1:
                break
            changed = len(after.steps) == n + 1 and (
                before is None or len(before.steps) <= n or before.steps[n] != after.steps[n]
            )
            if changed:
                expected = after
        assert state_at(events, n) == expected


def _shape(state: RunState) -> list[tuple[object, ...]]:
    # Only money spent can still reach an earlier step once a later one has started.
    return [(s.step_number, s.step_type, s.status, s.tool_calls, s.output) for s in state.steps]


@given(legal_runs())
def test_state_at_keeps_the_steps_before(run: Run) -> None:
    events, final = run
    for n in range(len(final.steps)):
        at = state_at(events, n)
        assert len(at.steps) == n + 1
        assert _shape(at)[:n] == _shape(final)[:n]


def _illegal(state: RunState) -> list[ev.RunEvent]:
    """Events that the rules must refuse in ``state``."""
    bad: list[ev.RunEvent] = [
        queued(),
        ev.RunStarted(attempt=state.attempt + 2),
        ev.StepStarted(step_number=state.next_step + 1, step_type="response"),
        ev.StepCompleted(step_number=state.next_step),
        ev.StepFailed(step_number=state.next_step, error_code="x"),
        ev.BudgetSettled(reservation_id="never-reserved", actual_micro_usd=0),
        llm(state.next_step),
    ]
    if state.status != "budget_exceeded":
        bad.append(ev.RunResumed())
    if state.status != "running":
        bad += [
            ev.RunCompleted(),
            ev.StepStarted(step_number=state.next_step, step_type="response"),
            ev.DivergenceDetected(step_number=0),
        ]
    if state.status in TERMINAL:
        bad += [
            ev.RunFailed(code="x"),
            ev.RunCancelled(),
            ev.BudgetExceeded(),
            ev.CancelRequested(),
        ]
        bad.append(ev.RunStarted(attempt=state.attempt + 1))
    if state.cancel_requested:
        bad.append(ev.CancelRequested())
    return bad


@given(legal_runs(), st.data())
def test_illegal_events_are_refused(run: Run, data: st.DataObject) -> None:
    events, state = run
    event = data.draw(st.sampled_from(_illegal(state)))
    with pytest.raises(IllegalTransition):
        check(state, event)
    with pytest.raises(IllegalTransition):
        fold([*events, event])


@given(legal_runs(), st.data())
def test_an_illegal_event_inside_a_run_fails_the_whole_fold(run: Run, data: st.DataObject) -> None:
    events, _ = run
    cut = data.draw(st.integers(1, len(events)))
    event = data.draw(st.sampled_from(_illegal(fold(events[:cut]))))
    with pytest.raises(IllegalTransition):
        fold([*events[:cut], event, *events[cut:]])


@given(legal_runs(budgeted=True), st.integers(1, 1000))
def test_reservations_beyond_the_budget_are_refused(run: Run, excess: int) -> None:
    events, _ = run
    for k in range(1, len(events) + 1):
        state = fold(events[:k])
        limit = state.budget.micro_usd
        if state.status != "running" or limit is None:
            continue
        room = limit - state.committed.micro_usd - state.reserved.micro_usd
        with pytest.raises(BudgetExhausted):
            check(state, ev.BudgetReserved(reservation_id="fresh", amount_micro_usd=room + excess))
        full = apply(state, ev.BudgetReserved(reservation_id="fresh", amount_micro_usd=room))
        assert full.committed.micro_usd + full.reserved.micro_usd == limit
