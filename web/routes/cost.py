"""Spend over time and the costliest runs, for the dashboard's cost page (next to
``/v1/usage`` and ``/v1/usage/breakdown``, which give totals and the split by agent and model).

Both read through the reporting repository over a range of UTC days: the spend from the
projected ``costs`` table, the costliest runs a page at a time off an index of ``runs`` in
their order (``cursor`` and ``next_cursor`` as in the other lists).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

import msgspec
from aiohttp import web

from papayya.errors import InvalidInput
from papayya.money import cents_up, usd_string
from projections.reporting import CostKey, Reporting
from web import http, keys
from web.openapi import api
from web.routes.usage import date_range

MAX_DAYS: Final = 366
DEFAULT_TOP: Final = 10
RANGE: Final = (("from", "string"), ("to", "string"))


class DayUsage(msgspec.Struct, kw_only=True):
    day: date
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str
    total_cost_cents: int


class DailyUsage(msgspec.Struct, kw_only=True):
    """Every UTC day of the range, oldest first, zeros on days without spend."""

    from_: date = msgspec.field(name="from")
    to: date
    days: list[DayUsage]


class CostlyRun(msgspec.Struct, kw_only=True):
    id: str
    agent_id: str
    status: str
    trigger: str
    total_input_tokens: int
    total_output_tokens: int
    total_cost_cents: int
    cost_usd: str
    budget_cents: int | None
    created_at: datetime
    completed_at: datetime | None


class CostlyRuns(msgspec.Struct, kw_only=True):
    """Runs created in the range, costliest first (runs that cost nothing are left out);
    ``next_cursor`` fetches the next page, None on the last one."""

    from_: date = msgspec.field(name="from")
    to: date
    data: list[CostlyRun]
    next_cursor: str | None = None


def _bounded_range(request: web.Request) -> tuple[date, date]:
    start, to = date_range(request)
    if (to - start).days >= MAX_DAYS:
        raise InvalidInput(f"a range spans at most {MAX_DAYS} days")
    return start, to


def _instants(start: date, to: date) -> tuple[datetime, datetime]:
    """The range as instants: [start 00:00 UTC, the day after ``to`` 00:00 UTC)."""
    return datetime.combine(start, time(), UTC), datetime.combine(to, time(), UTC) + timedelta(1)


def _day(day: date, sums: Mapping[str, Any]) -> DayUsage:
    # Token and cost sums are numeric (Decimal here): back to exact ints.
    micro = int(sums.get("cost_micro_usd", 0))
    return DayUsage(
        day=day,
        calls=int(sums.get("calls", 0)),
        input_tokens=int(sums.get("input_tokens", 0)),
        output_tokens=int(sums.get("output_tokens", 0)),
        cached_tokens=int(sums.get("cached_tokens", 0)),
        cost_usd=usd_string(micro),
        total_cost_cents=cents_up(micro),
    )


@api.route(
    "GET", "/v1/usage/daily",
    "Spend and tokens of the project per UTC day (default: the last 30 days; at most 366)",
    response=DailyUsage, query=RANGE, tag="usage",
)  # fmt: skip
async def usage_daily(request: web.Request) -> web.Response:
    start, to = _bounded_range(request)
    reporting = Reporting.of(request.app[keys.STORE])
    rows = await reporting.spend_by_day(http.project_id(request), start, to)
    found = {row["day"]: dict(row) for row in rows}
    days = [
        _day(day, found.get(day, {}))
        for day in (start + timedelta(days=n) for n in range((to - start).days + 1))
    ]
    return http.json(DailyUsage(from_=start, to=to, days=days))


@api.route(
    "GET", "/v1/usage/runs",
    "The costliest runs created in a range of UTC days (default: the last 30), costliest first",
    response=CostlyRuns, query=(*RANGE, ("limit", "integer"), ("cursor", "string")), tag="usage",
)  # fmt: skip
async def costliest_runs(request: web.Request) -> web.Response:
    start, to = _bounded_range(request)
    limit = http.query_int(request, "limit", DEFAULT_TOP, 1, http.MAX_LIMIT)
    assert limit is not None
    after = _cost_key(http.decode_cursor(request))
    reporting = Reporting.of(request.app[keys.STORE])
    rows = await reporting.costliest_runs(
        http.project_id(request), *_instants(start, to), limit + 1, after
    )
    cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        cursor = http.encode_cursor(
            [int(last["total_cost_micro_usd"]), last["created_at"].isoformat(), last["run_id"]]
        )
    data = [
        CostlyRun(
            id=row["run_id"],
            agent_id=row["agent_id"],
            status=row["status"],
            trigger=row["trigger"],
            total_input_tokens=int(row["total_input_tokens"]),
            total_output_tokens=int(row["total_output_tokens"]),
            total_cost_cents=cents_up(int(row["total_cost_micro_usd"])),
            cost_usd=usd_string(int(row["total_cost_micro_usd"])),
            budget_cents=None
            if row["budget_micro_usd"] is None
            else cents_up(row["budget_micro_usd"]),
            created_at=row["created_at"],
            completed_at=row["completed_at"],
        )
        for row in rows
    ]
    return http.json(CostlyRuns(from_=start, to=to, data=data, next_cursor=cursor))


def _cost_key(values: list[Any] | None) -> CostKey | None:
    """The place in the costliest runs' order that a ``cursor`` names."""
    if values is None:
        return None
    try:
        cost, created, run_id = values
        if type(cost) is not int or not isinstance(created, str) or not isinstance(run_id, str):
            raise ValueError
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError
    except ValueError:
        raise InvalidInput("cursor is not one this API issued") from None
    return CostKey(cost, moment, run_id)
