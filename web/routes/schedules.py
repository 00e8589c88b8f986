"""Cron schedules over HTTP. The scheduler that fires them queues their runs through the
queue command (``papayya.triggers.firing``), not through this module.

Times are UTC, except ``next_fire_times``, which are in the schedule's timezone (with its
offset), so that DST changes show.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from papayya.commands import queue
from papayya.commands.queue import RunOptions
from papayya.errors import InvalidInput, NotFound
from papayya.readmodels.agents import Agent, MaxSteps
from papayya.readmodels.projects import new_id
from papayya.readmodels.schedules import FireOut, Schedule, input_json
from papayya.triggers.policy import CatchupPolicy, OverlapPolicy
from papayya.triggers.zone import CronSchedule
from web import http, keys
from web.openapi import api
from web.routes import agents
from web.routes.runs import Cents

NEXT_FIRES: Final = 5
_NO_NUL = r"^[^\x00]*$"
CronText = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL)]
TimezoneName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_NO_NUL)]


class CreateSchedule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Runs of the agent in the path at the times of a 5-field cron expression in an IANA
    timezone (UTC unless sent, as in the hosted API). ``input``, ``max_steps`` and
    ``budget_cents`` are each run's (limits not sent come from the agent's config)."""

    cron_expression: CronText
    timezone: TimezoneName = "UTC"
    input: Any = None
    max_steps: MaxSteps | None = None
    budget_cents: Cents | None = None
    overlap_policy: OverlapPolicy = "skip"
    catchup_policy: CatchupPolicy = "latest"
    enabled: bool = True


class PatchSchedule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Fields sent replace the schedule's; ``enabled`` pauses and resumes it (a resumed
    schedule does not catch up the fires it was paused for)."""

    cron_expression: CronText | UnsetType = UNSET
    timezone: TimezoneName | UnsetType = UNSET
    input: Any | UnsetType = UNSET
    max_steps: MaxSteps | UnsetType | None = UNSET
    budget_cents: Cents | UnsetType | None = UNSET
    overlap_policy: OverlapPolicy | UnsetType = UNSET
    catchup_policy: CatchupPolicy | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class ScheduleOut(msgspec.Struct):
    id: str
    project_id: str
    agent_id: str
    cron_expression: str
    timezone: str
    input: Any
    max_steps: int | None
    budget_cents: int | None
    overlap_policy: str
    catchup_policy: str
    enabled: bool
    next_fire_times: list[datetime]  # the next 5, in the schedule's timezone; [] if paused
    last_fire_at: datetime | None
    last_run_id: str | None
    created_at: datetime
    updated_at: datetime


def schedule_out(schedule: Schedule, now: datetime) -> ScheduleOut:
    fires: list[datetime] = []
    if schedule.enabled:
        cron = schedule.cron
        fires = [cron.local(f) for f in cron.next_fires(now, NEXT_FIRES)]
    return ScheduleOut(
        schedule.schedule_id, schedule.project_id, schedule.agent_id, schedule.cron_expression,
        schedule.timezone, schedule.input, schedule.max_steps, schedule.budget_cents,
        schedule.overlap_policy, schedule.catchup_policy, schedule.enabled, fires,
        schedule.last_fire_at, schedule.last_run_id, schedule.created_at, schedule.updated_at,
    )  # fmt: skip


def _ref(request: web.Request) -> str:
    """The path's id; one no row could have (control characters) answers 404 at once."""
    value = http.path_id(request)
    if not value.isprintable():
        raise NotFound(f"{value!r} not found")
    return value


def _checked(agent: Agent, schedule: Schedule) -> CronSchedule:
    """The schedule's cron, after checking that it and its runs' options are valid."""
    cron = schedule.cron
    input_json(schedule.input)
    options = RunOptions(
        input=schedule.input, max_steps=schedule.max_steps, budget_cents=schedule.budget_cents
    )
    queue.check_run(agent, options, "schedule")
    return cron


@api.route(
    "POST", "/v1/agents/{id}/schedules", "Schedule runs of this agent with a cron expression",
    body=CreateSchedule, response=ScheduleOut, status=201, tag="schedules",
)  # fmt: skip
async def create_schedule(request: web.Request) -> web.Response:
    ref = _ref(request)
    req = await http.body(request, CreateSchedule)
    project = http.project_id(request)
    agent = await request.app[keys.AGENTS].find(project, ref)
    now = datetime.now(UTC)
    draft = Schedule(
        schedule_id=new_id("sch"), project_id=project, agent_id=agent.id,
        cron_expression=req.cron_expression, timezone=req.timezone, input=req.input,
        max_steps=req.max_steps, budget_cents=req.budget_cents,
        overlap_policy=req.overlap_policy, catchup_policy=req.catchup_policy,
        enabled=req.enabled, next_fire_at=now, last_fire_at=None, last_run_id=None,
        created_at=now, updated_at=now,
    )  # fmt: skip
    cron = _checked(agent, draft)
    draft = msgspec.structs.replace(draft, next_fire_at=cron.next_fire(now))
    created = await request.app[keys.SCHEDULES].create(draft)
    return http.json(schedule_out(created, now), 201)


async def _list(request: web.Request, agent_id: str | None) -> web.Response:
    limit = http.limit(request)
    after_time, after_id = agents.page_after(request)
    page = await request.app[keys.SCHEDULES].page(
        http.project_id(request), agent_id, (after_time, after_id), limit + 1
    )
    now = datetime.now(UTC)
    found = page[:limit]
    cursor = None
    if len(page) > limit:
        cursor = http.encode_cursor([found[-1].created_at.isoformat(), found[-1].schedule_id])
    return http.page(request, [schedule_out(s, now) for s in found], cursor)


PAGE: Final = (("limit", "integer"), ("cursor", "string"))


@api.route(
    "GET", "/v1/agents/{id}/schedules", "This agent's schedules, newest first",
    response=list[ScheduleOut], query=PAGE, tag="schedules",
)  # fmt: skip
async def list_agent_schedules(request: web.Request) -> web.Response:
    ref = _ref(request)
    agent = await request.app[keys.AGENTS].find(http.project_id(request), ref)
    return await _list(request, agent.id)


@api.route(
    "GET", "/v1/schedules", "The project's schedules, newest first",
    response=list[ScheduleOut], query=(*PAGE, ("agent_id", "string")), tag="schedules",
)  # fmt: skip
async def list_schedules(request: web.Request) -> web.Response:
    ref = request.query.get("agent_id") or None
    if ref is None:
        return await _list(request, None)
    if len(ref) > 200 or not ref.isprintable():
        raise InvalidInput("agent_id is not an agent id or slug")
    try:
        agent = await request.app[keys.AGENTS].find(http.project_id(request), ref)
    except NotFound:
        return http.page(request, [])
    return await _list(request, agent.id)


@api.route("GET", "/v1/schedules/{id}", "A schedule", response=ScheduleOut, tag="schedules")
async def get_schedule(request: web.Request) -> web.Response:
    schedule = await request.app[keys.SCHEDULES].find(http.project_id(request), _ref(request))
    return http.json(schedule_out(schedule, datetime.now(UTC)))


@api.route(
    "PATCH", "/v1/schedules/{id}",
    "Change a schedule; enabled pauses and resumes it",
    body=PatchSchedule, response=ScheduleOut, tag="schedules",
)  # fmt: skip
async def patch_schedule(request: web.Request) -> web.Response:
    schedule_id = _ref(request)
    req = await http.body(request, PatchSchedule)
    project = http.project_id(request)
    now = datetime.now(UTC)

    async def change(current: Schedule) -> Schedule:
        changed = _patched(current, req)
        agent = await request.app[keys.AGENTS].find(project, current.agent_id)
        cron = _checked(agent, changed)
        moved = (changed.cron_expression, changed.timezone) != (
            current.cron_expression,
            current.timezone,
        )
        resumed = changed.enabled and not current.enabled
        return msgspec.structs.replace(
            changed,
            next_fire_at=cron.next_fire(now) if moved or resumed else current.next_fire_at,
            updated_at=now if changed != current else current.updated_at,
        )

    updated = await request.app[keys.SCHEDULES].update(project, schedule_id, change)
    return http.json(schedule_out(updated, now))


def _patched(schedule: Schedule, req: PatchSchedule) -> Schedule:
    sent = {
        name: value
        for name in PatchSchedule.__struct_fields__
        if not isinstance(value := getattr(req, name), UnsetType)
    }
    return msgspec.structs.replace(schedule, **sent)


@api.route(
    "DELETE", "/v1/schedules/{id}", "Delete a schedule and its fires (its runs stay)",
    response=ScheduleOut, tag="schedules",
)  # fmt: skip
async def delete_schedule(request: web.Request) -> web.Response:
    schedule_id = _ref(request)
    gone = await request.app[keys.SCHEDULES].delete(http.project_id(request), schedule_id)
    deleted = msgspec.structs.replace(gone, enabled=False)
    return http.json(schedule_out(deleted, datetime.now(UTC)))


@api.route(
    "GET", "/v1/schedules/{id}/fires",
    "A schedule's fires, newest first: the run each started or why it was skipped",
    response=list[FireOut], query=PAGE, tag="schedules",
)  # fmt: skip
async def list_fires(request: web.Request) -> web.Response:
    schedule_id = _ref(request)
    project = http.project_id(request)
    limit = http.limit(request)
    before = _fire_cursor(request)
    found = await request.app[keys.SCHEDULES].fires(project, schedule_id, before, limit + 1)
    fires = found[:limit]
    cursor = None
    if len(found) > limit:
        cursor = http.encode_cursor([fires[-1].fire_at.isoformat()])
    return http.page(request, fires, cursor)


def _fire_cursor(request: web.Request) -> datetime | None:
    values = http.decode_cursor(request)
    if values is None:
        return None
    try:
        [moment] = values
        when = datetime.fromisoformat(moment)
        if when.tzinfo is None:
            raise ValueError
        return when
    except (ValueError, TypeError):
        raise InvalidInput("cursor is not one this API issued") from None
