"""A run's time limit without I/O: where its clock starts and restarts (the fold), its
deadline, and how an attempt stopped for it ends (issue 19)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.timelimit import deadline, limit_seconds, timeout_message
from workers.timelimits import arm_deadline, stopped_outcome
from workers.worker import WorkerConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def queued(**fields: object) -> ev.RunQueued:
    return ev.RunQueued(at=at(0), run_id="r", project_id="p", agent_id="a", **fields)  # type: ignore[arg-type]


def test_the_clock_counts_the_run_across_attempts_and_restarts_on_resume() -> None:
    state = fold([queued(timeout_seconds=60)])
    assert deadline(state) is None  # queued time does not count
    state = fold([ev.RunStarted(at=at(10), attempt=1)], state)
    assert deadline(state) == at(70)
    # A lost attempt and the next one keep the first start's deadline.
    state = fold([ev.AttemptLost(at=at(30), attempt=1), ev.RunStarted(at=at(40), attempt=2)], state)
    assert state.attempt == 2 and deadline(state) == at(70)
    # A user's resume (a budget top-up) gives the run its time afresh, from its next start.
    state = fold(
        [ev.BudgetExceeded(at=at(50)), ev.RunResumed(at=at(500), budget_micro_usd=9)], state
    )
    assert deadline(state) == at(10 + 60)  # the run's first start still shows ...
    assert state.clock_started_at is None  # ... until the resumed run starts again
    state = fold([ev.RunStarted(at=at(600), attempt=3)], state)
    assert deadline(state) == at(660) and state.started_at == at(10)


def test_old_runs_have_the_default_hour() -> None:
    state = fold([queued(), ev.RunStarted(at=at(5), attempt=1)])
    assert state.timeout_seconds is None and limit_seconds(state) == 3600
    assert deadline(state) == at(3605)
    # A RunQueued stored without the field (before limits existed) decodes the same.
    old = ev.decode_event("RunQueued", {"run_id": "r", "project_id": "p", "agent_id": "a"})
    assert isinstance(old, ev.RunQueued) and old.timeout_seconds is None


@pytest.mark.parametrize("bad", [0, -1, 7 * 86400 + 1])
def test_a_stored_limit_is_bounded(bad: int) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"run_id": "r", "project_id": "p", "agent_id": "a",
                         "timeout_seconds": bad, "type": "RunQueued"}, ev.RunQueued)  # fmt: skip


def test_how_a_stopped_attempt_ends() -> None:
    state = fold([queued(timeout_seconds=2), ev.RunStarted(at=at(1), attempt=1)])
    [ended] = stopped_outcome(state, "timeout", 3, 0.0, 60.0, "w")
    assert isinstance(ended, ev.RunFailed) and ended.code == "timeout"
    assert "2 s" in ended.message and ended.message == timeout_message(state)
    # A frozen agent counts as a crash: retried while attempts remain, then failed.
    [lost] = stopped_outcome(state, "heartbeat_lost", 3, 9.5, 6.0, "w")
    assert isinstance(lost, ev.AttemptLost) and lost.reason == "heartbeat_lost"
    last = fold([ev.AttemptLost(at=at(3), attempt=1), ev.RunStarted(at=at(4), attempt=2)], state)
    [failed] = stopped_outcome(last, "heartbeat_lost", 2, 9.5, 6.0, "w")
    assert isinstance(failed, ev.RunFailed) and failed.code == "heartbeat_lost"
    assert "attempt 2 of 2" in failed.message and "9.5 s" in failed.message


async def test_an_attempt_out_of_time_already_is_stopped_before_it_starts() -> None:
    now = datetime.now(UTC)
    fired: list[str] = []
    began = now - timedelta(seconds=6)
    late = fold([queued(timeout_seconds=5), ev.RunStarted(at=began, attempt=1)])
    assert arm_deadline(late, lambda: fired.append("late")) is None
    assert fired == ["late"]  # at once, not at the loop's next turn
    early = fold([queued(timeout_seconds=5), ev.RunStarted(at=now, attempt=1)])
    timer = arm_deadline(early, lambda: fired.append("early"))
    assert timer is not None and 4 < timer.when() - asyncio.get_running_loop().time() <= 5
    timer.cancel()
    assert arm_deadline(fold([queued()]), lambda: fired.append("queued")) is None
    assert fired == ["late"]


def test_the_silence_bound_is_the_lease_unless_set_and_longer_than_a_heartbeat() -> None:
    assert WorkerConfig.from_env({}).agent_silence_seconds == 60
    env = {"PAPAYYA_HEARTBEAT_SECONDS": "1", "PAPAYYA_LEASE_SECONDS": "5"}
    assert WorkerConfig.from_env(env).agent_silence_seconds == 5
    set_ = {**env, "PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS": "3"}
    assert WorkerConfig.from_env(set_).agent_silence_seconds == 3
    for bad in ("1", "0.5", "0", "-3", "soon", "nan"):
        with pytest.raises(ValueError, match="PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS"):
            WorkerConfig.from_env({**env, "PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS": bad})
