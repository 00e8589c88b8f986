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

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from eventstore.postgres import PostgresEventStore
from eventstore.types import RecordedEvent
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.matcher import task_fingerprint
from papayya.domain.state import RunState, StepState
from papayya.errors import ConcurrencyError, Conflict, InvalidInput, RunNotFound
from papayya.runs import MAX_RUN_ID, run_stream, run_summary
from papayya.sdk.direct import INLINE_RESULT_BYTES
from papayya.sdk.http import (
    CheckpointBody,
    DurableCheckpoint,
    DurableRun,
    DurableStep,
    FinishRunBody,
    OpenRunBody,
)
from web import http, keys
from web.openapi import api

# Runs kept folded in memory per server; each read still catches up with the stream.
CACHED_RUNS: Final = 512
# Writers racing on one run each win one round, so this many concurrent writers always finish.
MAX_TRIES: Final = 64
# Event metadata keys: what a run's events carry beside their domain data.
KEY: Final = "idempotency_key"
CREATED: Final = "created"
CONTEXT: Final = "context"
SNAPSHOTS: Final = ("input_snapshot", "output_snapshot")
_encoder = msgspec.json.Encoder()

Meta = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class View:
    """A run as this API answers it: the fold, plus what its events carry as metadata (the
    context of each checkpoint, and which open started the latest attempt), and its tasks of
    the current attempt by ``(label, failed)``, so a post finds its label without a scan."""

    state: RunState
    context: Mapping[int, Meta]
    start_key: str | None
    start_created: bool
    updated_at: datetime | None
    tasks: Mapping[tuple[str, bool], int]


def _next_view(
    view: View | None, state: RunState, events: Iterable[tuple[ev.RunEvent, Meta]], at: Any
) -> View:
    # Copied once per call, never per event, so catching up on a long run stays linear.
    context = dict(view.context) if view else {}
    tasks = dict(view.tasks) if view else {}
    key, created = (view.start_key, view.start_created) if view else (None, False)
    for event, meta in events:
        if isinstance(event, ev.RunStarted):
            key, created = meta.get(KEY), bool(meta.get(CREATED))
            tasks.clear()
        elif isinstance(event, ev.StepCompleted | ev.StepFailed):
            step = state.steps[event.step_number]
            if step.step_type == "checkpoint" and step.label is not None:
                tasks[step.label, step.status == "failed"] = step.step_number
        if meta.get(CONTEXT) and isinstance(event, ev.CheckpointSaved | ev.StepFailed):
            context[event.step_number] = meta[CONTEXT]
    return View(state, context, key, created, at, tasks)


def _summary(state: RunState) -> dict[str, Any]:
    """``run_summary`` without converting every step only to drop them (that made each
    append cost time in proportion to the run's length)."""
    summary = run_summary(msgspec.structs.replace(state, steps=()))
    summary["current_step"] = state.next_step
    return summary


class Views:
    """Recently used runs, folded. A read catches up with one query for the events since the
    cached version, so a long run is neither re-read nor re-folded on every call."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.store = store
        self._runs: OrderedDict[str, View] = OrderedDict()

    async def get(self, run_id: str) -> View | None:
        cached = self._runs.get(run_id)
        after = cached.state.version if cached else 0
        recorded = await self.store.read_stream(run_stream(run_id), after + 1)
        if recorded:
            cached = _caught_up(cached, recorded)
            self._keep(cached)
        elif cached is not None:
            self._runs.move_to_end(run_id)
        return cached

    async def append(
        self, view: View | None, events: Sequence[ev.RunEvent], meta: Sequence[Meta | None] = ()
    ) -> View:
        """``Runs.append`` with event metadata: ``ConcurrencyError`` if the run moved on."""
        now = datetime.now(UTC)
        events = [e if e.at is not None else msgspec.structs.replace(e, at=now) for e in events]
        pairs = [(e, meta[i] if i < len(meta) else None) for i, e in enumerate(events)]
        state = fold(events, view.state if view else None)
        await self.store.append(
            run_stream(state.run_id),
            [ev.to_new_event(e, metadata=dict(m) if m else None) for e, m in pairs],
            view.state.version if view else "no_stream",
            summary=_summary(state),
        )
        new = _next_view(view, state, [(e, m or {}) for e, m in pairs], now)
        self._keep(new)
        return new

    def cached(self, run_id: str) -> View | None:
        """The run as last seen here, possibly behind its stream (no query)."""
        return self._runs.get(run_id)

    def _keep(self, view: View) -> None:
        run_id = view.state.run_id
        cached = self._runs.get(run_id)
        if cached is None or cached.state.version < view.state.version:
            self._runs[run_id] = view
        self._runs.move_to_end(run_id)
        while len(self._runs) > CACHED_RUNS:
            self._runs.popitem(last=False)


def _caught_up(view: View | None, recorded: Sequence[RecordedEvent]) -> View:
    pairs = [
        (e, r.metadata or {}) for r in recorded if isinstance(e := ev.from_recorded(r), ev.RunEvent)
    ]
    state = fold([e for e, _ in pairs], view.state if view else None)
    return _next_view(view, state, pairs, recorded[-1].recorded_at)


# app.py owns the app's keys and the app is frozen once it serves, so the cache hangs off the
# app's store: one per app, gone with it.
_VIEWS: weakref.WeakKeyDictionary[PostgresEventStore, Views] = weakref.WeakKeyDictionary()


def _views(request: web.Request) -> Views:
    store = request.app[keys.STORE]
    views = _VIEWS.get(store)
    if views is None:
        views = _VIEWS[store] = Views(store)
    return views


def scoped_id(project: str, run_id: str) -> str:
    """The id under which ``project`` stores its durable run ``run_id``."""
    return f"{project}:{run_id}"


def public_id(project: str, stored: str) -> str:
    """The id that ``project``'s client knows its run by: ``scoped_id`` undone."""
    prefix = f"{project}:"
    return stored[len(prefix) :] if stored.startswith(prefix) else stored


async def _find(views: Views, run_id: str, project: str) -> tuple[str, View | None]:
    """The stored id of ``project``'s run ``run_id`` and the run, if any: the scoped id, else
    a run of the project's under the bare id (see the module's docstring). A run found under
    the scoped id that another project owns (an id taken before ids were scoped) is returned
    for the caller to refuse."""
    scoped = scoped_id(project, run_id)
    if len(scoped) <= MAX_RUN_ID:
        view = await views.get(scoped)
        if view is not None:
            return scoped, view
    bare = await views.get(run_id)
    if bare is not None and bare.state.project_id == project:
        return run_id, bare
    return scoped, None


async def _own(views: Views, run_id: str, project: str) -> View:
    _, view = await _find(views, run_id, project)
    if view is None or view.state.project_id != project:
        raise RunNotFound(f"run {run_id} not found")
    return view


def _cached(views: Views, run_id: str, project: str) -> View | None:
    """``_find`` among the runs cached here, without a query (possibly behind its stream)."""
    return views.cached(scoped_id(project, run_id)) or views.cached(run_id)


def _path_run_id(request: web.Request) -> str:
    run_id = http.path_id(request, "run_id")
    try:
        run_stream(run_id)
    except InvalidInput:
        raise RunNotFound(f"run {run_id} not found") from None
    return run_id


# -- bulky values ------------------------------------------------------------------------------


async def _stash(store: PostgresEventStore, value: Any) -> tuple[Any, str | None]:
    """``(value, None)`` if small, else ``(None, ref)`` with the JSON in the payloads table."""
    raw = _encoder.encode(value)
    if len(raw) <= INLINE_RESULT_BYTES:
        return value, None
    return None, await store.put_payload(raw, "application/json")


async def _resolve(store: PostgresEventStore, refs: set[str]) -> dict[str, Any]:
    ordered = list(refs)
    found = await asyncio.gather(*(store.get_payload(ref) for ref in ordered))
    return {ref: msgspec.json.decode(raw) for ref, raw in zip(ordered, found, strict=True)}


async def _context(store: PostgresEventStore, req: CheckpointBody) -> dict[str, Any]:
    """A checkpoint's context as its event's metadata keeps it (bulky snapshots by ref)."""
    context: dict[str, Any] = {}
    if req.item_id is not None:
        context["item_id"] = req.item_id
    if req.agent_version is not None:
        context["agent_version"] = req.agent_version
    for name in SNAPSHOTS:
        value = getattr(req, name)
        if value is not None:
            value, ref = await _stash(store, value)
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


async def _document(store: PostgresEventStore, view: View) -> DurableRun:
    values = await _resolve(store, _refs(view))
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
    views = _views(request)
    run_stream(req.run_id)  # refuses ids no stream may have, before anything is read
    if (req.replay_of is None) != (req.from_step is None):
        raise InvalidInput("replay_of and from_step go together")
    for _ in range(MAX_TRIES):
        stored, view = await _find(views, req.run_id, project)
        try:
            if view is None:
                view, created = await _create(views, stored, req, project, key), True
            else:
                view, created = await _resume(views, view, req, project, key)
        except ConcurrencyError:
            continue
        return http.json(await _document(views.store, view), 201 if created else 200)
    raise ConcurrencyError(f"run {req.run_id} kept changing; gave up after {MAX_TRIES} tries")


async def _create(
    views: Views, stored: str, req: OpenRunBody, project: str, key: str | None
) -> View:
    source = None if req.replay_of is None else await _own(views, req.replay_of, project)
    metadata = dict(req.metadata or {})
    metadata.update(
        {k: v for k, v in (("item_id", req.item_id), ("agent_version", req.agent_version)) if v}
    )
    queued = ev.RunQueued(
        run_id=stored,
        project_id=project,
        agent_id=req.agent,
        input=req.input,
        budget_micro_usd=req.budget_micro_usd,
        trigger="replay" if req.replay_of else "sdk",
        replayed_from=None if source is None else source.state.run_id,
        replay_from_step=req.from_step,
        metadata=metadata,
    )
    started = ev.RunStarted(attempt=1)
    return await views.append(None, [queued, started], [None, {KEY: key, CREATED: True}])


async def _resume(
    views: Views, view: View, req: OpenRunBody, project: str, key: str | None
) -> tuple[View, bool]:
    state = view.state
    if state.project_id != project:  # only an id taken before ids were scoped
        raise Conflict(f"run id {req.run_id} is taken; choose another")
    if state.agent_id != req.agent:
        raise InvalidInput(
            f"run {req.run_id} belongs to agent {state.agent_id!r}, not {req.agent!r}"
        )
    if key is not None and view.start_key == key:
        return view, view.start_created  # a retry of the open that started this attempt
    if state.status in ("queued", "running"):
        # A new attempt, as in direct mode: the step in flight at a crash is given up.
        started = ev.RunStarted(attempt=state.attempt + 1)
        view = await views.append(view, [started], [{KEY: key} if key else None])
    return view, False


@api.route(
    "GET", "/v1/durable/runs/{run_id}", "A run with its checkpoints (results included)",
    response=DurableRun, tag="durable",
)  # fmt: skip
async def get_run(request: web.Request) -> web.Response:
    views = _views(request)
    view = await _own(views, _path_run_id(request), http.project_id(request))
    return http.json(await _document(views.store, view))


def _recorded(view: View, label: str, failed: bool) -> StepState | None:
    """The step this label already has in the run's current attempt: a retried post."""
    n = view.tasks.get((label, failed))
    if n is None:
        return None
    step = view.state.steps[n]
    if failed and step.error_code != "task_error":
        return None
    return step


async def _answer(
    store: PostgresEventStore, view: View, step: StepState, status: int
) -> web.Response:
    values = await _resolve(store, {step.output_ref} if step.output_ref else set())
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
    views = _views(request)
    store = views.store
    # The common case skips reading the stream: an append on a cached view that fell behind
    # fails on its version and is decided again on a fresh one. Anything else reads first.
    # A rule the cached view breaks is broken by the run too: events are only ever added.
    view = _cached(views, run_id, project)
    if view is None or not _takes(view, project, req.label, failed):
        view = await _own(views, run_id, project)
    if (found := _recorded(view, req.label, failed)) is not None:
        return await _answer(store, view, found, 200)
    if view.state.status != "running":
        raise Conflict(f"run {run_id} is {view.state.status}; it takes no checkpoints")
    result, ref = (None, None) if failed else await _stash(store, req.result)
    context = await _context(store, req)
    for _ in range(MAX_TRIES):
        events = _task_events(view.state.next_step, req, result, ref)
        try:
            view = await views.append(view, events, [None, {CONTEXT: context} if context else None])
        except ConcurrencyError:
            view = await _own(views, run_id, project)
            if (found := _recorded(view, req.label, failed)) is not None:
                return await _answer(store, view, found, 200)
            continue
        step = view.state.steps[events[0].step_number]
        # What was just stashed is answered from the request, not read back.
        values = {ref: req.result} if ref else {}
        values |= {context[f"{n}_ref"]: getattr(req, n) for n in SNAPSHOTS if f"{n}_ref" in context}
        return http.json(_checkpoint(view, step, values), 201)
    raise ConcurrencyError(f"run {run_id} kept changing; gave up after {MAX_TRIES} tries")


def _takes(view: View, project: str, label: str, failed: bool) -> bool:
    """Whether ``view`` may take this checkpoint as it stands, without reading the stream."""
    state = view.state
    return (
        state.project_id == project
        and state.status == "running"
        and state.in_flight is None
        and _recorded(view, label, failed) is None
    )


def _task_events(
    n: int, req: CheckpointBody, result: Any, ref: str | None
) -> list[ev.StepStarted | ev.CheckpointSaved | ev.StepCompleted | ev.StepFailed]:
    at, label, took = req.completed_at, req.label, req.duration_ms
    started = ev.StepStarted(step_number=n, step_type="checkpoint", label=label, at=at)
    if req.error is not None:
        ended = ev.StepFailed(
            step_number=n, error_code="task_error", error_message=req.error, duration_ms=took, at=at
        )
        return [started, ended]
    saved = ev.CheckpointSaved(
        step_number=n,
        label=label,
        fingerprint=task_fingerprint(label),
        result=result,
        result_ref=ref,
        duration_ms=took,
        at=at,
    )
    return [started, saved, ev.StepCompleted(step_number=n, duration_ms=took, at=at)]


@api.route(
    "PATCH", "/v1/durable/runs/{run_id}",
    "End a run: completed (with output) or failed (with error); the same end again is a "
    "no-op, a different one 409",
    body=FinishRunBody, response=DurableRun, tag="durable",
)  # fmt: skip
async def finish_run(request: web.Request) -> web.Response:
    req = await http.body(request, FinishRunBody)
    if req.status == "completed" and (req.error is not None or req.error_code is not None):
        raise InvalidInput("error and error_code go with status failed")
    if req.status == "failed" and req.output is not None:
        raise InvalidInput("output goes with status completed")
    run_id = _path_run_id(request)
    project = http.project_id(request)
    views = _views(request)
    view = await _own(views, run_id, project)
    output, ref = None, None
    if req.status == "completed" and not view.state.is_terminal:
        output, ref = await _stash(views.store, req.output)
    for _ in range(MAX_TRIES):
        state = view.state
        if state.status == req.status:
            return http.json(await _document(views.store, view))
        if state.is_terminal:
            raise Conflict(f"run {run_id} is already {state.status}")
        end: ev.RunEvent = (
            ev.RunCompleted(output=output, output_ref=ref)
            if req.status == "completed"
            else ev.RunFailed(code=req.error_code or "agent_error", message=req.error or "")
        )
        try:
            view = await views.append(view, [end])
        except ConcurrencyError:
            view = await _own(views, run_id, project)
            continue
        return http.json(await _document(views.store, view))
    raise ConcurrencyError(f"run {run_id} kept changing; gave up after {MAX_TRIES} tries")
