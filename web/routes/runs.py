"""Runs over HTTP: queue, read, list, steps, cancel, replay, resume and time travel.

Reads of one run come from its stream (its summary, or the fold), so a client reads its own
writes; lists come from the ``runs`` read model, which the projector keeps a moment behind.
Commands go through ``papayya.commands`` on the app's run-state repository (``keys.RUNS``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Final, get_args

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from papayya import urlguard
from papayya.commands import cancel, queue, replay, resume
from papayya.commands.owned import load_own
from papayya.commands.queue import RunOptions
from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.domain.fold import fold, state_at
from papayya.domain.state import RunState, RunStatus
from papayya.errors import InvalidInput, RunNotFound
from papayya.models import RunOut, StepOut, run_out, run_out_from_summary, step_out
from papayya.readmodels.agents import Tokens
from papayya.readmodels.leases import Leases
from papayya.runs import MAX_RUN_ID, run_stream
from web import http, keys
from web.openapi import api
from web.routes import agents

STATUSES: Final = frozenset(get_args(RunStatus))

AgentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Reason = Annotated[str, msgspec.Meta(max_length=1000)]
Step = bounds.FromStep
Cents = bounds.Cents


class CreateRun(RunOptions, kw_only=True):
    """A run of the agent ``agent_id`` (its id or slug)."""

    agent_id: AgentRef


class CancelRun(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None


class ReplayRun(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new run whose steps before ``from_step`` are answered from this run's recording.
    ``input`` replaces the source's input when sent (``null`` included)."""

    from_step: Step
    input: Any | UnsetType = UNSET
    allow_version_mismatch: bool = False
    # A built-in loop's replay may run its live steps with another model or system prompt.
    model: queue.Model | None = None
    system_prompt: queue.Instructions | None = None


class ResumeRun(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """New limits for a ``budget_exceeded`` run; those not sent stay as they were."""

    budget_cents: Cents | None = None
    budget_input_tokens: Tokens | None = None
    budget_output_tokens: Tokens | None = None
    budget_total_tokens: Tokens | None = None


def _run_id(request: web.Request) -> str:
    run_id = http.path_id(request)
    if len(run_id) > MAX_RUN_ID or any(ch.isspace() or not ch.isprintable() for ch in run_id):
        raise RunNotFound(f"run {run_id} not found")
    return run_id


def find_agent(request: web.Request) -> queue.FindAgent:
    """The agent lookup the queue and replay commands use: this app's agents read model."""
    return request.app[keys.AGENTS].find


def idempotency_keys(request: web.Request) -> queue.IdempotencyKeys:
    return request.app[keys.IDEMPOTENCY_KEYS]


async def _load(request: web.Request, run_id: str) -> RunState:
    return await load_own(request.app[keys.RUNS], http.project_id(request), run_id)


async def _create(request: web.Request, agent_ref: str, req: RunOptions) -> web.Response:
    """201 with the new run; with an ``idempotency_key`` already used, 200 with the run that
    the key's first request created."""
    if req.callback_url is not None:  # refused before anything is written (docs/security.md)
        allow = request.app[keys.CONFIG].callback_allow_private
        await urlguard.check_url(req.callback_url, allow_private=allow)
    state, created = await queue.queue_run(
        request.app[keys.RUNS], idempotency_keys(request), find_agent(request),
        http.project_id(request), agent_ref, req,
        find_defaults=request.app[keys.PROJECTS].defaults,
    )  # fmt: skip
    return http.json(run_out(state), 201 if created else 200)


@api.route(
    "POST", "/v1/runs", "Queue a run of an agent (idempotent with idempotency_key)",
    body=CreateRun, response=RunOut, status=201, tag="runs",
)  # fmt: skip
async def create_run(request: web.Request) -> web.Response:
    req = await http.body(request, CreateRun)
    return await _create(request, req.agent_id, req)


@api.route(
    "POST", "/v1/agents/{id}/runs", "Queue a run of this agent (id or slug)",
    body=RunOptions, response=RunOut, status=201, tag="runs",
)  # fmt: skip
async def create_agent_run(request: web.Request) -> web.Response:
    ref = http.path_id(request)
    req = await http.body(request, RunOptions)
    return await _create(request, ref, req)


# -- read -----------------------------------------------------------------------------------


@api.route(
    "GET", "/v1/runs", "List runs, newest first (a run is listed as soon as it is created)",
    response=list[RunOut], tag="runs",
    query=(("limit", "integer"), ("cursor", "string"), ("agent_id", "string"),
           ("status", "string")),
)  # fmt: skip
async def list_runs(request: web.Request) -> web.Response:
    limit = http.limit(request)
    agent = request.query.get("agent_id") or None
    if agent is not None and len(agent) > 200:
        raise InvalidInput("agent_id is longer than 200 characters")
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(sorted(STATUSES))}")
    summaries = await request.app[keys.RUN_LIST].page(
        http.project_id(request), agent, status, agents.page_after(request), limit + 1
    )
    runs = [run_out_from_summary(s) for s in summaries[:limit]]
    cursor = None
    if len(summaries) > limit:
        last = runs[-1]
        assert last.created_at is not None  # the column is NOT NULL
        cursor = http.encode_cursor([last.created_at.isoformat(), last.id])
    return http.page(request, runs, cursor)


@api.route(
    "GET", "/v1/runs/{id}",
    "A run; a running one shows its worker's lease (no longer renewed: the worker is gone)",
    response=RunOut, tag="runs",
)  # fmt: skip
async def get_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    found = await request.app[keys.STORE].summary(run_stream(run_id))
    if found is None:  # a stream appended without a summary: fold it
        return http.json(run_out(await _load(request, run_id)))
    summary = found[1]
    if summary.get("project_id") != http.project_id(request):
        raise RunNotFound(f"run {run_id} not found")
    out = run_out_from_summary(summary)
    if out.status == "running":
        heartbeats = request.app[keys.HEARTBEATS]
        out.no_heartbeat_since = await heartbeats.no_heartbeat_since(run_id)
        out.lease = await Leases(request.app[keys.STORE]).of_run(run_id)
    return http.json(out)


@api.route("GET", "/v1/runs/{id}/steps", "A run's steps", response=list[StepOut], tag="runs")
async def list_steps(request: web.Request) -> web.Response:
    state = await _load(request, _run_id(request))
    return http.page(request, [step_out(s) for s in state.steps])


@api.route(
    "GET", "/v1/runs/{id}/state", "The run's folded state after step at_step (default: now)",
    response=RunState, query=(("at_step", "integer"),), tag="runs",
)  # fmt: skip
async def run_state(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    at_step = http.query_int(request, "at_step", None, 0, bounds.MAX_STEPS - 1)
    events: Sequence[ev.RunEvent] = await request.app[keys.RUNS].events(run_id)
    first = events[0]
    assert isinstance(first, ev.RunQueued)  # the fold accepts nothing else first
    if first.project_id != http.project_id(request):
        raise RunNotFound(f"run {run_id} not found")
    return http.json(fold(events) if at_step is None else state_at(events, at_step))


# -- commands -------------------------------------------------------------------------------


async def _cancel_body(request: web.Request) -> CancelRun:
    """The body is optional: none at all is no reason."""
    if not request.can_read_body or not (await http.read_body(request)).strip():
        return CancelRun()
    return await http.body(request, CancelRun)


@api.route(
    "POST", "/v1/runs/{id}/cancel",
    "Cancel a run: a queued one never starts; a running one is asked to stop (409 if ended)",
    body=CancelRun, response=RunOut, tag="runs",
)  # fmt: skip
async def cancel_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    req = await _cancel_body(request)
    runs, project = request.app[keys.RUNS], http.project_id(request)
    return http.json(run_out(await cancel.cancel_run(runs, project, run_id, req.reason)))


@api.route(
    "POST", "/v1/runs/{id}/replay",
    "Replay a run from a step as a new run linked to it",
    body=ReplayRun, response=RunOut, status=201, tag="runs",
)  # fmt: skip
async def replay_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    req = await http.body(request, ReplayRun)
    state = await replay.replay_run(
        request.app[keys.RUNS], find_agent(request), http.project_id(request), run_id,
        req.from_step, input=req.input, allow_version_mismatch=req.allow_version_mismatch,
        model=req.model, system_prompt=req.system_prompt,
    )  # fmt: skip
    return http.json(run_out(state), 201)


@api.route(
    "POST", "/v1/runs/{id}/resume",
    "Queue a budget_exceeded run again with higher limits; it continues from its checkpoint",
    body=ResumeRun, response=RunOut, tag="runs",
)  # fmt: skip
async def resume_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    req = await http.body(request, ResumeRun)
    state = await resume.resume_run(
        request.app[keys.RUNS], http.project_id(request), run_id,
        budget_cents=req.budget_cents, budget_input_tokens=req.budget_input_tokens,
        budget_output_tokens=req.budget_output_tokens, budget_total_tokens=req.budget_total_tokens,
    )  # fmt: skip
    return http.json(run_out(state))
