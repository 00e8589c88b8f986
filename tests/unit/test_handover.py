"""When a lost attempt may hand its run over (``papayya.domain.handover``): pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.handover import handover
from tests.support.strategies import queued

AT = datetime(2026, 1, 1, tzinfo=UTC)
LOST = [ev.AttemptLost(attempt=1, reason="agent_exit_137")]


def in_flight() -> ev.BudgetReserved:
    return ev.BudgetReserved(
        reservation_id="r1", amount_micro_usd=500, input_tokens=20, output_tokens=30, at=AT
    )


def test_an_attempt_without_calls_in_flight_is_lost_at_once() -> None:
    state = fold([queued(), ev.RunStarted(attempt=1)])
    assert handover(state, LOST, AT, 60) == LOST


def test_a_call_in_flight_holds_the_next_attempt_back_until_the_wait_is_over() -> None:
    state = fold([queued(), ev.RunStarted(attempt=1), in_flight()])
    assert handover(state, LOST, AT + timedelta(seconds=59), 60) is None
    settled, lost = handover(state, LOST, AT + timedelta(seconds=60), 60) or []
    # Settled at the worst case it was admitted with: its usage never arrived.
    assert settled == ev.BudgetSettled(
        reservation_id="r1", actual_micro_usd=500, input_tokens=20, output_tokens=30,
        stale=True, usage_estimated=True,
    )  # fmt: skip
    assert lost == LOST[0]


def test_a_run_that_ends_for_good_does_not_wait() -> None:
    state = fold([queued(), ev.RunStarted(attempt=1), in_flight()])
    failed = [ev.RunFailed(code="worker_lost")]
    assert handover(state, failed, AT, 60) == failed
