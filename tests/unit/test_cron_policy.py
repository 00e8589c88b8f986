"""What a schedule does with fires found due late (catchup_policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from papayya.triggers.policy import MAX_CATCHUP_RUNS, Decision, plan

NOW = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)
HOURLY_MISSED = [NOW - timedelta(hours=h, seconds=30) for h in (3, 2, 1)]
ON_TIME = NOW - timedelta(seconds=30)


def started(decisions: list[Decision]) -> list[datetime]:
    return [d.fire_at for d in decisions if d.start]


def test_latest_runs_only_the_most_recent() -> None:
    decisions = plan([*HOURLY_MISSED, ON_TIME], NOW, "latest")
    assert started(decisions) == [ON_TIME]
    assert [d.reason for d in decisions] == ["missed", "missed", "missed", None]
    assert started(plan(HOURLY_MISSED, NOW, "latest")) == [HOURLY_MISSED[-1]]


def test_all_runs_each_up_to_a_limit() -> None:
    assert started(plan(HOURLY_MISSED, NOW, "all")) == HOURLY_MISSED
    many = [NOW - timedelta(minutes=m) for m in range(250, 0, -1)]
    decisions = plan(many, NOW, "all")
    assert started(decisions) == many[-MAX_CATCHUP_RUNS:]
    assert all(d.reason == "missed" for d in decisions[: len(many) - MAX_CATCHUP_RUNS])


def test_none_runs_only_fires_within_grace() -> None:
    assert started(plan([*HOURLY_MISSED, ON_TIME], NOW, "none")) == [ON_TIME]
    assert started(plan(HOURLY_MISSED, NOW, "none")) == []
    late = NOW - timedelta(seconds=90)
    assert started(plan([late], NOW, "none", grace=timedelta(minutes=2))) == [late]


def test_every_policy_runs_a_fire_that_is_on_time() -> None:
    for policy in ("latest", "all", "none"):
        assert started(plan([ON_TIME], NOW, policy)) == [ON_TIME]  # type: ignore[arg-type]
        assert plan([], NOW, policy) == []  # type: ignore[arg-type]
