"""Usage reports: a project's model tokens, spend and runs over a range of UTC days.

Spend comes from the ``costs`` read table (one row per project, agent, model and day) and run
counts from ``run_days`` (one row per project, agent and day), both kept by the projectors and
read through the reporting repository; so a report costs the same however many runs there
are, and reflects the events up to the projectors' lag (``papayya_projection_lag_seconds``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import asyncpg
import msgspec
from aiohttp import web

from papayya.errors import InvalidInput
from papayya.money import cents_up, usd_string
from projections.reporting import Reporting
from web import http, keys
from web.openapi import api

DEFAULT_DAYS: Final = 30


class UsageOut(msgspec.Struct, kw_only=True):
    """Totals over the UTC days ``from`` to ``to``, both included. Tokens as in a run:
    input counts every input bucket, output includes reasoning, cached is part of input."""

    from_: date = msgspec.field(name="from")
    to: date
    runs: int
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str
    total_cost_cents: int


class AgentModelUsage(msgspec.Struct, kw_only=True):
    agent_id: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str
    total_cost_cents: int


class AgentUsage(msgspec.Struct, kw_only=True):
    agent_id: str
    runs: int
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str
    total_cost_cents: int


class ModelUsage(msgspec.Struct, kw_only=True):
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: str
    total_cost_cents: int


class UsageBreakdown(msgspec.Struct, kw_only=True):
    """The same range split by agent (with its runs), by model, and by both."""

    from_: date = msgspec.field(name="from")
    to: date
    by_agent: list[AgentUsage]
    by_model: list[ModelUsage]
    by_agent_model: list[AgentModelUsage]


class _Sums(msgspec.Struct):
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_micro_usd: int = 0

    def add(self, row: asyncpg.Record) -> None:
        # Token and cost sums are numeric (Decimal here): back to exact ints.
        self.calls += int(row["calls"])
        self.input_tokens += int(row["input_tokens"])
        self.output_tokens += int(row["output_tokens"])
        self.cached_tokens += int(row["cached_tokens"])
        self.cost_micro_usd += int(row["cost_micro_usd"])

    def money(self) -> dict[str, Any]:
        """The API's fields of these sums: money as an exact string and rounded-up cents."""
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": usd_string(self.cost_micro_usd),
            "total_cost_cents": cents_up(self.cost_micro_usd),
        }


def _day(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be a date like 2025-01-31") from None
    if value >= date.max:  # the day after it, where the range ends, does not exist
        raise InvalidInput(f"query parameter {name} is out of range")
    return value


def date_range(request: web.Request, today: date | None = None) -> tuple[date, date]:
    """``from`` and ``to`` (UTC days, both included); by default the last 30 days."""
    today = today or datetime.now(UTC).date()
    to = _day(request, "to", today)
    window = timedelta(days=DEFAULT_DAYS - 1)
    start = _day(request, "from", to - window if to - date.min >= window else date.min)
    if start > to:
        raise InvalidInput("from must not be after to")
    return start, to


@api.route(
    "GET", "/v1/usage", "Tokens, spend and runs of the project over a range of UTC days",
    response=UsageOut, query=(("from", "string"), ("to", "string")), tag="usage",
)  # fmt: skip
async def usage(request: web.Request) -> web.Response:
    start, to = date_range(request)
    project = http.project_id(request)
    reporting = Reporting.of(request.app[keys.STORE])
    sums = _Sums()
    sums.add(await reporting.usage_totals(project, start, to))
    runs = sum((await reporting.runs_by_agent(project, start, to)).values())
    return http.json(UsageOut(from_=start, to=to, runs=runs, **sums.money()))


@api.route(
    "GET", "/v1/usage/breakdown", "Usage of the project by agent, by model and by both",
    response=UsageBreakdown, query=(("from", "string"), ("to", "string")), tag="usage",
)  # fmt: skip
async def usage_breakdown(request: web.Request) -> web.Response:
    start, to = date_range(request)
    project = http.project_id(request)
    reporting = Reporting.of(request.app[keys.STORE])
    rows = await reporting.usage_by_agent_model(project, start, to)
    runs = await reporting.runs_by_agent(project, start, to)
    agents: dict[str, _Sums] = {agent: _Sums() for agent in runs}
    models: dict[str, _Sums] = {}
    pairs = []
    for row in rows:
        agents.setdefault(row["agent_id"], _Sums()).add(row)
        models.setdefault(row["model"], _Sums()).add(row)
        pair = _Sums()
        pair.add(row)
        pairs.append(AgentModelUsage(agent_id=row["agent_id"], model=row["model"], **pair.money()))
    return http.json(
        UsageBreakdown(
            from_=start,
            to=to,
            by_agent=[
                AgentUsage(agent_id=agent, runs=runs.get(agent, 0), **sums.money())
                for agent, sums in sorted(agents.items())
            ],
            by_model=[
                ModelUsage(model=model, **sums.money()) for model, sums in sorted(models.items())
            ],
            by_agent_model=pairs,
        )
    )
