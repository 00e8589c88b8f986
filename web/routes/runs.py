"""Runs over HTTP: queue, read, list, steps, cancel, replay, resume and time travel.

Reads of one run come from its stream (its summary, or the fold), so a client reads its own
writes; lists come from the ``runs`` read model, which the projector keeps a moment behind.
Commands go through ``Runs``, whose fold judges every event before it is appended.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, get_args

import asyncpg
import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from eventstore.postgres import PostgresEventStore
from eventstore.types import prepare
from papayya import urlguard
from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.domain.fold import fold, state_at
from papayya.domain.state import RunState, RunStatus
from papayya.errors import Conflict, InvalidInput, NotFound, RunNotFound
from papayya.money import cents_to_micro, cents_up, usd_string, usd_to_micro
from papayya.readmodels.agents import Instructions
from papayya.runs import MAX_RUN_ID, Runs, cancel_events, replay_of, run_stream
from sql import queries
from web import http, keys
from web.models import RunOut, StepOut, run_out, run_out_from_summary, step_out
from web.openapi import api
from web.routes import agents
from web.routes.agents import MaxSteps, Model, Tokens

Q: Final = queries("api.sql")
STATUSES: Final = frozenset(get_args(RunStatus))
# RunQueued has no field for the model yet: until it does, the run's model (the request's,
# else the agent's) travels in its metadata under this reserved key.
MODEL_KEY: Final = "papayya.model"
# Likewise the system prompt a run or a replay gives the built-in loop instead of the agent's.
SYSTEM_PROMPT_KEY: Final = "papayya.system_prompt"
RESERVED_PREFIX: Final = "papayya."
_decode = msgspec.json.decode

Cents = bounds.Cents
CallbackUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s/]+\S*$")]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
AgentRef = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Reason = Annotated[str, msgspec.Meta(max_length=1000)]
Step = bounds.FromStep


class RunOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A run of the agent in the path. Limits not sent come from the agent's config; a
    string ``input`` is kept as given, anything else as JSON."""

    input: Any = None
    model: Model | None = None
    system_prompt: Instructions | None = None
    max_steps: MaxSteps | None = None
    budget_cents: Cents | None = None
    budget_input_tokens: Tokens | None = None
    budget_output_tokens: Tokens | None = None
    budget_total_tokens: Tokens | None = None
    callback_url: CallbackUrl | None = None
    idempotency_key: IdempotencyKey | None = None
    metadata: dict[str, Any] = {}


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
    model: Model | None = None
    system_prompt: Instructions | None = None


class ResumeRun(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """New limits for a ``budget_exceeded`` run; those not sent stay as they were."""

    budget_cents: Cents | None = None
    budget_input_tokens: Tokens | None = None
    budget_output_tokens: Tokens | None = None
    budget_total_tokens: Tokens | None = None


class RunList(msgspec.Struct):
    data: list[RunOut]
    next_cursor: str | None


class StepList(msgspec.Struct):
    data: list[StepOut]


def _run_id(request: web.Request) -> str:
    run_id = http.path_id(request)
    if len(run_id) > MAX_RUN_ID or any(ch.isspace() or not ch.isprintable() for ch in run_id):
        raise RunNotFound(f"run {run_id} not found")
    return run_id


def _own(request: web.Request, run_id: str, project_id: str) -> None:
    """Another project's run answers exactly like a missing one."""
    if project_id != http.project_id(request):
        raise RunNotFound(f"run {run_id} not found")


async def _load(request: web.Request, run_id: str) -> RunState:
    state = await request.app[keys.RUNS].load(run_id)
    _own(request, run_id, state.project_id)
    return state


def _storable(queued: ev.RunQueued) -> None:
    """Raise now, before anything is written, if the event could not be appended (invalid,
    larger than an event may be, or holding a NUL character)."""
    prepare([ev.to_new_event(queued)])


# -- create ---------------------------------------------------------------------------------


def _queued(
    run_id: str, agent: agents.Agent, req: RunOptions, trigger: str = "api"
) -> ev.RunQueued:
    config = agent.settings
    if any(k.startswith(RESERVED_PREFIX) for k in req.metadata):
        raise InvalidInput(f"metadata keys starting with {RESERVED_PREFIX!r} are reserved")
    metadata = dict(req.metadata)
    model = req.model or config.model
    if model is not None:
        metadata[MODEL_KEY] = model
    if req.system_prompt is not None:
        metadata[SYSTEM_PROMPT_KEY] = req.system_prompt

    def pick(sent: int | None, default: int | None) -> int | None:
        return default if sent is None else sent

    budget = (
        cents_to_micro(req.budget_cents)
        if req.budget_cents is not None
        else usd_to_micro(config.budget_usd)
    )
    return ev.RunQueued(
        run_id=run_id,
        project_id=agent.project_id,
        agent_id=agent.id,
        input=req.input,
        budget_micro_usd=budget,
        budget_input_tokens=pick(req.budget_input_tokens, config.budget_input_tokens),
        budget_output_tokens=pick(req.budget_output_tokens, config.budget_output_tokens),
        budget_total_tokens=pick(req.budget_total_tokens, config.budget_total_tokens),
        max_steps=pick(req.max_steps, config.max_steps),
        loop_threshold=config.loop_threshold,
        trigger=trigger,
        idempotency_key=req.idempotency_key,
        callback_url=req.callback_url,
        deployment_version=agent.deployment_version,
        metadata=metadata,
    )


def check_run(agent: agents.Agent, req: RunOptions, trigger: str = "api") -> None:
    """Raise now if a run of ``agent`` with ``req`` could not be queued (a schedule checks
    its run options when it is created, not at its first fire)."""
    _storable(_queued(f"run_{uuid.uuid4().hex}", agent, req, trigger))


async def queue_run(
    store: PostgresEventStore,
    project: str,
    agent_ref: str,
    req: RunOptions,
    *,
    trigger: str = "api",
    run_id: str | None = None,
    trigger_metadata: Mapping[str, Any] | None = None,
) -> tuple[RunState, bool]:
    """Queue a run of the project's agent ``agent_ref`` (id or slug) as ``POST /v1/runs``
    does; schedules and webhooks start theirs through here too. Returns the run and whether
    this call created it: with an ``idempotency_key`` already used, the run that the key's
    first caller created (whatever this call's other fields say). ``trigger_metadata`` goes
    into the run's metadata after the check that keeps callers out of the reserved keys."""
    pool = store.pool
    runs = Runs(store)
    agent = await agents.find(pool, project, agent_ref)
    queued = _queued(run_id or f"run_{uuid.uuid4().hex}", agent, req, trigger)
    if trigger_metadata:
        queued = msgspec.structs.replace(queued, metadata={**queued.metadata, **trigger_metadata})
    _storable(queued)
    key = req.idempotency_key
    if key is None or await pool.fetchval(Q["claim_idempotency_key"], project, key, queued.run_id):
        return await runs.queue(queued), True
    existing = await pool.fetchval(Q["idempotent_run"], project, key)
    # The first request may still be appending, or may have died between its claim and its
    # append: queueing under its run id completes it, and Runs.queue returns the run as it
    # is if it exists. Either way the key names exactly one run.
    return await runs.queue(msgspec.structs.replace(queued, run_id=existing)), False


async def _create(request: web.Request, agent_ref: str, req: RunOptions) -> web.Response:
    """201 with the new run; with an ``idempotency_key`` already used, 200 with the run that
    the key's first request created."""
    if req.callback_url is not None:  # refused before anything is written (docs/security.md)
        allow = request.app[keys.CONFIG].callback_allow_private
        await urlguard.check_url(req.callback_url, allow_private=allow)
    store = request.app[keys.STORE]
    state, created = await queue_run(store, http.project_id(request), agent_ref, req)
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


def _json(value: str | None) -> Any:
    return None if value is None else _decode(value)


def _listed(row: asyncpg.Record) -> RunOut:
    budget = row["budget_micro_usd"]
    cost = int(row["total_cost_micro_usd"])  # the totals are numeric columns (Decimal here)
    return RunOut(
        id=row["run_id"],
        project_id=row["project_id"],
        agent_id=row["agent_id"],
        status=row["status"],
        input=_json(row["input"]),
        output=_json(row["output"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        current_step=row["current_step"],
        total_input_tokens=int(row["total_input_tokens"]),
        total_output_tokens=int(row["total_output_tokens"]),
        total_cached_tokens=int(row["total_cached_tokens"]),
        total_cost_cents=cents_up(cost),
        cost_usd=usd_string(cost),
        budget_cents=None if budget is None else cents_up(budget),
        max_steps=row["max_steps"],
        attempt=row["attempt"],
        trigger=row["trigger"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        replayed_from=row["replayed_from"],
        replay_from_step=row["replay_from_step"],
        diverged_at_step=row["diverged_at_step"],
        deployment_version=row["deployment_version"],
        idempotency_key=row["idempotency_key"],
    )


@api.route(
    "GET", "/v1/runs", "List runs, newest first (from the runs read model)",
    response=RunList, tag="runs",
    query=(("limit", "integer"), ("cursor", "string"), ("agent_id", "string"),
           ("status", "string")),
)  # fmt: skip
async def list_runs(request: web.Request) -> web.Response:
    limit = http.limit(request)
    after_time, after_id = agents.page_after(request)
    agent = request.query.get("agent_id") or None
    if agent is not None and len(agent) > 200:
        raise InvalidInput("agent_id is longer than 200 characters")
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(sorted(STATUSES))}")
    rows = await request.app[keys.STORE].pool.fetch(
        Q["list_runs"], http.project_id(request), agent, status, after_time, after_id, limit + 1
    )
    runs = [_listed(r) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit:
        last = runs[-1]
        assert last.created_at is not None  # the column is NOT NULL
        cursor = http.encode_cursor([last.created_at.isoformat(), last.id])
    return http.json(RunList(runs, cursor))


@api.route("GET", "/v1/runs/{id}", "A run", response=RunOut, tag="runs")
async def get_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    found = await request.app[keys.STORE].summary(run_stream(run_id))
    if found is None:  # a stream appended without a summary: fold it
        return http.json(run_out(await _load(request, run_id)))
    summary = found[1]
    _own(request, run_id, str(summary.get("project_id")))
    return http.json(run_out_from_summary(summary))


@api.route("GET", "/v1/runs/{id}/steps", "A run's steps", response=StepList, tag="runs")
async def list_steps(request: web.Request) -> web.Response:
    state = await _load(request, _run_id(request))
    return http.json(StepList([step_out(s) for s in state.steps]))


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
    _own(request, run_id, first.project_id)
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

    def decide(state: RunState) -> list[ev.RunEvent]:
        _own(request, run_id, state.project_id)
        return cancel_events(state, req.reason)

    return http.json(run_out(await request.app[keys.RUNS].execute(run_id, decide)))


@api.route(
    "POST", "/v1/runs/{id}/replay",
    "Replay a run from a step as a new run linked to it",
    body=ReplayRun, response=RunOut, status=201, tag="runs",
)  # fmt: skip
async def replay_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    req = await http.body(request, ReplayRun)
    source = await _load(request, run_id)
    current = await _deployment_version(request, source)
    if (
        not req.allow_version_mismatch
        and current is not None
        and current != source.deployment_version
    ):
        raise Conflict(
            f"run {run_id} ran deployment {source.deployment_version}, the agent is now at "
            f"{current}; send allow_version_mismatch to replay anyway"
        )
    queued = replay_of(source, f"run_{uuid.uuid4().hex}", req.from_step)
    if not isinstance(req.input, UnsetType):
        queued = msgspec.structs.replace(queued, input=req.input)
    if current is not None:
        queued = msgspec.structs.replace(queued, deployment_version=current)
    changed = {MODEL_KEY: req.model, SYSTEM_PROMPT_KEY: req.system_prompt}
    if any(v is not None for v in changed.values()):
        metadata = {**queued.metadata, **{k: v for k, v in changed.items() if v is not None}}
        queued = msgspec.structs.replace(queued, metadata=metadata)
    _storable(queued)
    return http.json(run_out(await request.app[keys.RUNS].queue(queued)), 201)


async def _deployment_version(request: web.Request, run: RunState) -> str | None:
    """The run's agent's current deployment version; ``None`` (matches any run) while the
    agent has none or is not a registered agent (a local SDK run)."""
    try:
        agent = await agents.find(request.app[keys.STORE].pool, run.project_id, run.agent_id)
    except NotFound:
        return None
    return agent.deployment_version if agent.id == run.agent_id else None


@api.route(
    "POST", "/v1/runs/{id}/resume",
    "Queue a budget_exceeded run again with higher limits; it continues from its checkpoint",
    body=ResumeRun, response=RunOut, tag="runs",
)  # fmt: skip
async def resume_run(request: web.Request) -> web.Response:
    run_id = _run_id(request)
    req = await http.body(request, ResumeRun)
    if all(v is None for v in msgspec.structs.astuple(req)):
        raise InvalidInput("send a new budget: budget_cents or a token budget")
    resumed = ev.RunResumed(
        budget_micro_usd=cents_to_micro(req.budget_cents),
        budget_input_tokens=req.budget_input_tokens,
        budget_output_tokens=req.budget_output_tokens,
        budget_total_tokens=req.budget_total_tokens,
    )

    def decide(state: RunState) -> list[ev.RunEvent]:
        # The fold refuses it unless the run is budget_exceeded and the new limits exceed
        # what it has spent or holds (IllegalTransition, 409).
        _own(request, run_id, state.project_id)
        return [resumed]

    return http.json(run_out(await request.app[keys.RUNS].execute(run_id, decide)))
