"""The durable checkpoints API: what the SDK's HTTP mode (``papayya.sdk.http``) writes through.

Every call is safe to retry. Opening a run with the ``Idempotency-Key`` of an earlier open is
answered as that open was; a checkpoint is idempotent on its label within the run's attempt;
ending a run twice the same way is a no-op. Concurrent writers never share a step number: each
append carries the stream version its decision was made on, and a loser decides again.

A run id here is the client's, scoped to its project: project P's run ``x`` is stored as the
run ``P:x`` (stream ``run-P:x``; the document's ``id``, which ``/v1/runs/{id}``, the events and
the dashboard use), so two projects may each have their own ``x`` and neither can take an id
from the other. Runs stored under their bare id (opened before ids were scoped, or queued
through ``/v1/runs``, such as replays) keep answering to it in the project that owns them.
Another project's run answers 404, exactly as a missing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from eventstore.protocol import EventStore
from papayya import runtokens
from papayya.commands import checkpoint, cost, durable, finish
from papayya.commands.durable import MAX_TRIES, OpenRun, public_id
from papayya.commands.payloads import resolve, stash
from papayya.domain.matcher import task_fingerprint
from papayya.domain.state import RunState, StepState
from papayya.errors import ConcurrencyError, Conflict, InvalidInput, RunNotFound
from papayya.runs import run_stream
from papayya.runstates import CONTEXT, RunView
from papayya.wire import (
    CheckpointBody,
    CostBody,
    DurableCheckpoint,
    DurableRun,
    DurableStep,
    FinishRunBody,
    OpenRunBody,
)
from web import http, keys
from web.openapi import api

SNAPSHOTS: Final = ("input_snapshot", "output_snapshot")

Meta = Mapping[str, Any]
View = RunView


def _path_run_id(request: web.Request) -> str:
    run_id = http.path_id(request, "run_id")
    try:
        run_stream(run_id)
    except InvalidInput:
        raise RunNotFound(f"run {run_id} not found") from None
    return run_id


# -- bulky values ------------------------------------------------------------------------------


async def _context(store: EventStore, req: CheckpointBody) -> dict[str, Any]:
    """A checkpoint's context as its event's metadata keeps it (bulky snapshots by ref)."""
    context: dict[str, Any] = {}
    if req.item_id is not None:
        context["item_id"] = req.item_id
    if req.agent_version is not None:
        context["agent_version"] = req.agent_version
    if req.delivery_attempts is not None:
        context["delivery_attempts"] = req.delivery_attempts
    if req.journaled_at is not None:
        context["journaled_at"] = req.journaled_at.isoformat()
    if req.kind is not None:
        context["kind"] = req.kind
    if req.llm is not None:
        context["llm"] = msgspec.to_builtins(req.llm)
    for name in SNAPSHOTS:
        value = getattr(req, name)
        if value is not None:
            value, ref = await stash(store, value)
            context[name if ref is None else f"{name}_ref"] = value if ref is None else ref
    return context


# -- documents ---------------------------------------------------------------------------------


def _refs(view: View) -> set[str]:
    refs = {s.output_ref for s in view.state.steps if s.output_ref and _is_task(s)}
    refs |= {c[f"{n}_ref"] for c in view.context.values() for n in SNAPSHOTS if f"{n}_ref" in c}
    if view.state.output_ref:
        refs.add(view.state.output_ref)
    return refs


def _is_task(step: StepState) -> bool:
    return step.step_type == "checkpoint" and step.status in ("completed", "failed")


def _checkpoint(view: View, step: StepState, values: Mapping[str, Any]) -> DurableCheckpoint:
    context = view.context.get(step.step_number, {})

    def snapshot(name: str) -> Any:
        ref = context.get(f"{name}_ref")
        return values[ref] if ref else context.get(name)

    return DurableCheckpoint(
        label=step.label or "",
        result=values[step.output_ref] if step.output_ref else step.output,
        duration_ms=step.duration_ms,
        completed_at=step.completed_at,
        item_id=context.get("item_id"),
        input_snapshot=snapshot("input_snapshot"),
        output_snapshot=snapshot("output_snapshot"),
        agent_version=context.get("agent_version"),
        step_number=step.step_number,
        attempt=step.attempt,
        status=step.status,
        error=step.error_message if step.status == "failed" else None,
        result_ref=step.output_ref,
        delivery_attempts=context.get("delivery_attempts"),
        journaled_at=context.get("journaled_at"),
        kind=context.get("kind"),
        llm=context.get("llm"),
    )


def _step(step: StepState) -> DurableStep:
    return DurableStep(
        step_number=step.step_number,
        step_type=step.step_type,
        label=step.label,
        status=step.status,
        attempt=step.attempt,
        fingerprint=step.fingerprint,
        error_code=step.error_code,
        error_message=step.error_message,
        duration_ms=step.duration_ms,
        started_at=step.started_at,
        completed_at=step.completed_at,
    )


async def _document(store: EventStore, view: View) -> DurableRun:
    values = await resolve(store, _refs(view))
    s = view.state

    def meta_str(name: str) -> str | None:
        value = s.metadata.get(name)
        return value if isinstance(value, str) else None

    return DurableRun(
        run_id=public_id(s.project_id, s.run_id),
        id=s.run_id,
        project_id=s.project_id,
        agent=s.agent_id,
        status=s.status,
        attempt=s.attempt,
        item_id=meta_str("item_id"),
        agent_version=meta_str("agent_version"),
        trigger=s.trigger,
        input=s.input,
        output=values[s.output_ref] if s.output_ref else s.output,
        output_ref=s.output_ref,
        error_code=s.error_code,
        error_message=s.error_message,
        replayed_from=s.replayed_from and public_id(s.project_id, s.replayed_from),
        replay_from_step=s.replay_from_step,
        metadata=s.metadata,
        created_at=s.queued_at,
        started_at=s.started_at,
        completed_at=s.completed_at,
        updated_at=view.updated_at,
        checkpoints=[
            _checkpoint(view, step, values)
            for step in s.steps
            if _is_task(step) and step.status == "completed"
        ],
        steps=[_step(step) for step in s.steps],
    )


# -- routes ------------------------------------------------------------------------------------


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 200:
        raise InvalidInput("Idempotency-Key must have 1 to 200 characters")
    return key


@api.route(
    "POST", "/v1/durable/runs",
    "Open a run for the SDK: create it (201) or resume it as a new attempt (200); a retry "
    "with the same Idempotency-Key header is answered as the first try",
    body=OpenRunBody, response=DurableRun, status=201, tag="durable",
)  # fmt: skip
async def open_run(request: web.Request) -> web.Response:
    req = await http.body(request, OpenRunBody)
    key = _idempotency_key(request)
    project = http.project_id(request)
    runs = request.app[keys.RUNS]
    run_stream(req.run_id)  # refuses ids no stream may have, before anything is read
    if (req.replay_of is None) != (req.from_step is None):
        raise InvalidInput("replay_of and from_step go together")
    source = None if req.replay_of is None else await durable.own(runs, req.replay_of, project)
    metadata = dict(req.metadata or {})
    metadata.update(
        {k: v for k, v in (("item_id", req.item_id), ("agent_version", req.agent_version)) if v}
    )
    defaults = await request.app[keys.PROJECTS].defaults(project)
    for _ in range(MAX_TRIES):
        stored, view = await durable.find(runs, req.run_id, project)
        spec = OpenRun(
            run_id=stored, project_id=project, agent=req.agent, input=req.input,
            metadata=metadata, budget_micro_usd=req.budget_micro_usd,
            max_steps=req.max_steps, defaults=defaults,
            replayed_from=None if source is None else source.state.run_id,
            replay_from_step=req.from_step, idempotency_key=key,
        )  # fmt: skip
        try:
            view, created = await durable.open_run(runs, spec, view)
        except ConcurrencyError:
            continue
        doc = await _document(runs.store, view)
        # The same kind of token a worker gives a cloud run: it dies with the attempt.
        secret = request.app[keys.RUN_TOKEN_SECRET]
        doc.run_token = runtokens.mint(secret, view.state.run_id, view.state.attempt)
        if view.state.status == "running":  # the first sign of life of this attempt
            await request.app[keys.HEARTBEATS].beat(view.state.run_id, view.state.attempt)
        return http.json(doc, 201 if created else 200)
    raise ConcurrencyError(f"run {req.run_id} kept changing; gave up after {MAX_TRIES} tries")


@api.route(
    "GET", "/v1/durable/runs/{run_id}", "A run with its checkpoints (results included)",
    response=DurableRun, tag="durable",
)  # fmt: skip
async def get_run(request: web.Request) -> web.Response:
    runs = request.app[keys.RUNS]
    view = await durable.own(runs, _path_run_id(request), http.project_id(request))
    return http.json(await _document(runs.store, view))


def _recorded(view: View, label: str, failed: bool) -> StepState | None:
    """The step this label already has in the run's current attempt: a retried post."""
    return checkpoint.recorded_task(view.state, view.tasks, label, failed)


async def _answer(store: EventStore, view: View, step: StepState, status: int) -> web.Response:
    values = await resolve(store, {step.output_ref} if step.output_ref else set())
    return http.json(_checkpoint(view, step, values), status)


@api.route(
    "POST", "/v1/durable/runs/{run_id}/checkpoints",
    "Record a finished task as the run's next step (201); a label this attempt already "
    "recorded is answered with that step (200) and nothing is written",
    body=CheckpointBody, response=DurableCheckpoint, status=201, tag="durable",
)  # fmt: skip
async def post_checkpoint(request: web.Request) -> web.Response:
    req = await http.body(request, CheckpointBody)
    failed = req.error is not None
    if failed and req.result is not None:
        raise InvalidInput("a task that failed has no result")
    run_id = _path_run_id(request)
    project = http.project_id(request)
    runs = request.app[keys.RUNS]
    store = runs.store
    # The common case skips reading the stream: an append on a cached view that fell behind
    # fails on its version and is decided again on a fresh one. Anything else reads first.
    # A rule the cached view breaks is broken by the run too: events are only ever added.
    view = durable.cached(runs, run_id, project)
    if view is None or not _takes(view, project, req.label, failed):
        view = await durable.own(runs, run_id, project)
    if (found := _recorded(view, req.label, failed)) is not None:
        return await _answer(store, view, found, 200)
    if view.state.status != "running":
        raise Conflict(f"run {run_id} is {view.state.status}; it takes no checkpoints")
    result, ref = (None, None) if failed else await stash(store, req.result)
    context = await _context(store, req)
    view, step, created = await checkpoint.record_once(
        runs, view, lambda: durable.own(runs, run_id, project), req.label, failed,
        lambda n: task_events(n, req, result, ref), [None, {CONTEXT: context} if context else None],
    )  # fmt: skip
    if not created:
        return await _answer(store, view, step, 200)
    # What was just stashed is answered from the request, not read back.
    values = {ref: req.result} if ref else {}
    values |= {context[f"{n}_ref"]: getattr(req, n) for n in SNAPSHOTS if f"{n}_ref" in context}
    return http.json(_checkpoint(view, step, values), 201)


@api.route(
    "POST", "/v1/durable/runs/{run_id}/costs",
    "Record a cost the SDK cannot see (run.record_cost) as the run's next step, counted "
    "against its budget; a label this attempt already recorded is not counted again",
    body=CostBody, response=DurableRun, tag="durable",
)  # fmt: skip
async def post_cost(request: web.Request) -> web.Response:
    req = await http.body(request, CostBody)
    run_id = _path_run_id(request)
    project = http.project_id(request)
    runs = request.app[keys.RUNS]
    view = await durable.own(runs, run_id, project)
    if _recorded(view, req.label, False) is None:
        fingerprint = task_fingerprint(req.label)
        await runs.append_fresh(
            view.state,
            lambda s: [] if _recorded_in(s, req.label) else
            cost.cost_events(s, req.label, fingerprint, req.cost_micro_usd),
        )  # fmt: skip
        view = await durable.own(runs, run_id, project)
    return http.json(await _document(runs.store, view))


def _recorded_in(state: RunState, label: str) -> bool:
    """Whether the run's current attempt has a step ``label`` (a retried post)."""
    return any(s.label == label and s.attempt == state.attempt for s in state.steps)


def _takes(view: View, project: str, label: str, failed: bool) -> bool:
    """Whether ``view`` may take this checkpoint as it stands, without reading the stream."""
    state = view.state
    return (
        state.project_id == project
        and state.status == "running"
        and state.in_flight is None
        and _recorded(view, label, failed) is None
    )


def task_events(
    n: int, req: CheckpointBody, result: Any, ref: str | None
) -> list[checkpoint.TaskEvent]:
    """The checkpoint's events for a posted task, as step ``n``."""
    return checkpoint.task_events(
        n, req.label, duration_ms=req.duration_ms, result=result, ref=ref, error=req.error,
        at=req.completed_at,
    )  # fmt: skip


def _failure_text(req: FinishRunBody) -> str:
    """The failure's message: ``error``, or the ``output`` the published SDK sends its
    ``fail(error)`` as (a string as is, anything else as JSON), or a plain default."""
    if req.error is not None:
        return req.error
    if req.output is None:
        return "the run failed"
    if isinstance(req.output, str):
        return req.output
    return msgspec.json.encode(req.output).decode()


@api.route(
    "PATCH", "/v1/durable/runs/{run_id}",
    "End a run: completed (with output) or failed (with error, or with the error as output, "
    "as the published SDK sends it); the same end again is a no-op, a different one "
    "(another status or another output) 409",
    body=FinishRunBody, response=DurableRun, tag="durable",
)  # fmt: skip
async def finish_run(request: web.Request) -> web.Response:
    req = await http.body(request, FinishRunBody)
    if req.status == "completed" and (req.error is not None or req.error_code is not None):
        raise InvalidInput("error and error_code go with status failed")
    if req.status == "failed" and req.output is not None and req.error is not None:
        raise InvalidInput("a failure's error goes in error or in output, not both")
    run_id = _path_run_id(request)
    project = http.project_id(request)
    runs = request.app[keys.RUNS]
    view = await durable.own(runs, run_id, project)
    output, ref = None, None
    if req.status == "completed":
        # Stashed even when the run has ended, so that a second complete is compared with the
        # first by value (a bulky output by its content address).
        output, ref = await stash(runs.store, req.output)
    end = (
        finish.completed(output, ref)
        if req.status == "completed"
        else finish.failed(req.error_code or "agent_error", _failure_text(req))
    )
    for _ in range(MAX_TRIES):
        events = finish.ending(view.state, end)
        if not events:
            return http.json(await _document(runs.store, view))
        try:
            view = await runs.append_view(view, events)
        except ConcurrencyError:
            view = await durable.own(runs, run_id, project)
            continue
        return http.json(await _document(runs.store, view))
    raise ConcurrencyError(f"run {run_id} kept changing; gave up after {MAX_TRIES} tries")
