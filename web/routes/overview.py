"""The dashboard's overview: the project's run rate, failure rate, durations, active runs,
queue depth and spend, over a recent window of minutes.

It reads the aggregates the projectors keep, through the reporting repository, so it costs
the same however many runs there are and is as fresh as the projectors (the Prometheus gauges
in ``/metrics`` count every project; this is one project's view). The durations are DDSketch
percentiles: within 1% of the duration of that rank, never interpolated between two runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from aiohttp import web

from papayya.money import usd_string
from projections.reporting import Reporting
from web import http, keys
from web.openapi import api

DEFAULT_WINDOW: Final = 60
MAX_WINDOW: Final = 24 * 60


class MinuteOut(msgspec.Struct):
    """One minute of the window: runs created in it, and runs that ended in it by outcome."""

    minute: datetime
    created: int
    completed: int
    failed: int
    other: int  # cancelled or budget_exceeded


class OverviewOut(msgspec.Struct, kw_only=True):
    """``failure_rate`` is failed runs over all runs that ended in the window (``None`` when
    none ended); durations are of those runs, start to end."""

    window_minutes: int
    since: datetime
    runs_created: int
    runs_per_minute: float
    runs_ended: int
    ended_by_status: dict[str, int]
    failure_rate: float | None
    p50_duration_ms: float | None
    p95_duration_ms: float | None
    active_runs: int
    queue_depth: int
    spend_today_usd: str
    spend_last_7_days_usd: str
    per_minute: list[MinuteOut]


def minutes(
    since: datetime, count: int, created: dict[datetime, int], ended: dict[datetime, dict[str, int]]
) -> list[MinuteOut]:
    """Every minute of the window, oldest first, zeros where nothing happened."""
    series = []
    for i in range(count):
        minute = since + timedelta(minutes=i)
        outcomes = ended.get(minute, {})
        completed, failed = outcomes.get("completed", 0), outcomes.get("failed", 0)
        other = sum(outcomes.values()) - completed - failed
        series.append(MinuteOut(minute, created.get(minute, 0), completed, failed, other))
    return series


@api.route(
    "GET", "/v1/overview",
    "The project at a glance over the last `window` minutes (default 60, at most 1440): runs "
    "per minute, failure rate, p50/p95 duration, active runs, queue depth and spend",
    response=OverviewOut, query=(("window", "integer"),), tag="usage",
)  # fmt: skip
async def overview(request: web.Request) -> web.Response:
    window = http.query_int(request, "window", DEFAULT_WINDOW, 1, MAX_WINDOW)
    assert window is not None
    project = http.project_id(request)
    reporting = Reporting.of(request.app[keys.STORE])
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    since = now - timedelta(minutes=window - 1)  # the current minute is the last one
    created, ended = await reporting.minutes(project, since)
    by_status: dict[str, int] = {}
    for outcomes in ended.values():
        for status, runs in outcomes.items():
            by_status[status] = by_status.get(status, 0) + runs
    durations = await reporting.durations(project, since)
    unfinished = await reporting.unfinished(project)
    spent = await reporting.spend(project)
    runs_created, runs_ended = sum(created.values()), sum(by_status.values())
    return http.json(
        OverviewOut(
            window_minutes=window,
            since=since,
            runs_created=runs_created,
            runs_per_minute=round(runs_created / window, 3),
            runs_ended=runs_ended,
            ended_by_status=by_status,
            failure_rate=by_status.get("failed", 0) / runs_ended if runs_ended else None,
            p50_duration_ms=None if durations is None else durations[0],
            p95_duration_ms=None if durations is None else durations[1],
            active_runs=unfinished.running,
            queue_depth=unfinished.queued,
            spend_today_usd=usd_string(spent.today_micro_usd),
            spend_last_7_days_usd=usd_string(spent.last_7_days_micro_usd),
            per_minute=minutes(since, window, created, ended),
        )
    )
