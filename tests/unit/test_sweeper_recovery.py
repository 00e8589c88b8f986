"""What the sweeper appends for an attempt whose lease expired (``workers.sweeper.recovery``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.state import RunState
from tests.support.strategies import queued
from workers.sweeper import recovery, stale_settlements


def running(*more: ev.RunEvent, attempt: int = 1) -> RunState:
    started = [ev.RunStarted(attempt=n) for n in range(1, attempt + 1)]
    return fold([queued(), *started, *more])


def test_a_lost_attempt_is_queued_again_until_the_last_one_fails() -> None:
    (lost,) = recovery(running(), 1, "w1", max_attempts=3)
    assert isinstance(lost, ev.AttemptLost) and lost.attempt == 1 and lost.worker == "w1"
    (failed,) = recovery(running(attempt=3), 3, "w1", max_attempts=3)
    assert isinstance(failed, ev.RunFailed) and failed.code == "worker_lost"


def test_a_run_being_cancelled_ends_cancelled() -> None:
    state = running(ev.CancelRequested(reason="stop"))
    (cancelled,) = recovery(state, 1, "w1", max_attempts=3)
    assert isinstance(cancelled, ev.RunCancelled) and cancelled.reason == "stop"


def test_nothing_for_an_attempt_that_already_moved_on() -> None:
    assert recovery(running(attempt=2), 1, "w1", max_attempts=3) == []
    done = running(ev.RunCompleted(output=1))
    assert recovery(done, 1, "w1", max_attempts=3) == []


def test_stale_reservations_settle_at_their_amount_and_may_end_the_run() -> None:
    old = datetime(2026, 1, 1, tzinfo=UTC)
    cutoff = old + timedelta(minutes=11)
    young = old + timedelta(minutes=20)
    state = fold(
        [
            queued(budget_micro_usd=100),
            ev.RunStarted(attempt=1),
            ev.BudgetReserved(reservation_id="a", amount_micro_usd=60, input_tokens=5, at=old),
            ev.BudgetReserved(reservation_id="b", amount_micro_usd=40, input_tokens=5, at=young),
        ]
    )
    (settled,) = stale_settlements(state, cutoff)  # "b" may still be in flight: the run goes on
    assert isinstance(settled, ev.BudgetSettled) and settled.reservation_id == "a"
    assert settled.actual_micro_usd == 60 and settled.stale and settled.usage_estimated
    later = stale_settlements(state, young + timedelta(minutes=11))
    assert [type(e) for e in later] == [ev.BudgetSettled, ev.BudgetSettled, ev.BudgetExceeded]
    assert stale_settlements(state, old) == []
