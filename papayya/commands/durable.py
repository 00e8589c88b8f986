"""Durable runs: open or resume (the one rule, for the durable API and the SDK's direct mode),
and a run id's scoping to its project.

A durable run id is the client's, scoped to its project: project P's run ``x`` is stored as
the run ``P:x``, so two projects may each have their own ``x`` and neither can take an id from
the other. Runs stored under their bare id (opened before ids were scoped, queued through
``/v1/runs``, or the SDK's direct mode) keep answering to it in the project that owns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from papayya.commands.queue import queued
from papayya.domain import events as ev
from papayya.domain.defaults import ProjectDefaults, resolve
from papayya.domain.handover import settled_in_full
from papayya.errors import ConcurrencyError, Conflict, InvalidInput, RunNotFound
from papayya.money import cents_to_micro
from papayya.runs import MAX_RUN_ID
from papayya.runstates import CREATED, KEY, RunStates, RunView

# Writers racing on one run each win one round, so this many concurrent writers always finish.
MAX_TRIES: Final = 64


class OpenRun(msgspec.Struct, frozen=True, kw_only=True):
    """Open the run ``run_id`` (as stored) of ``agent``: create it, or start a new attempt.

    ``idempotency_key`` makes a retried open answer as the first one did; ``worker`` names
    who runs the attempt; ``check_project`` refuses a run of another project (the SDK's
    direct mode runs any); ``replayed_from`` (a stored id) and ``replay_from_step`` link a new
    run to the run it replays. A budget the open does not state is the project's
    (``defaults``): a durable run's agent is a name, with no config to give one. Its steps are
    the caller's own checkpoints, which the published SDK never limits, so the project's
    ``max_steps`` default is not applied: only a ``max_steps`` the open states limits them."""

    run_id: str
    project_id: str
    agent: str
    defaults: ProjectDefaults
    input: Any = None
    metadata: Mapping[str, Any] = {}
    budget_micro_usd: int | None = None
    max_steps: int | None = None
    replayed_from: str | None = None
    replay_from_step: int | None = None
    idempotency_key: str | None = None
    worker: str | None = None
    check_project: bool = True


def scoped_id(project: str, run_id: str) -> str:
    """The id under which ``project`` stores its durable run ``run_id``."""
    return f"{project}:{run_id}"


def public_id(project: str, stored: str) -> str:
    """The id that ``project``'s client knows its run by: ``scoped_id`` undone."""
    prefix = f"{project}:"
    return stored[len(prefix) :] if stored.startswith(prefix) else stored


async def find(runs: RunStates, run_id: str, project: str) -> tuple[str, RunView | None]:
    """The stored id of ``project``'s run ``run_id`` and the run, if any: the scoped id, else
    a run of the project's under the bare id. A run found under the scoped id that another
    project owns (an id taken before ids were scoped) is returned for the caller to refuse."""
    scoped = scoped_id(project, run_id)
    if len(scoped) <= MAX_RUN_ID:
        view = await runs.view(scoped)
        if view is not None:
            return scoped, view
    bare = await runs.view(run_id)
    if bare is not None and bare.state.project_id == project:
        return run_id, bare
    return scoped, None


async def own(runs: RunStates, run_id: str, project: str) -> RunView:
    """``project``'s durable run ``run_id``; ``RunNotFound`` for a missing or foreign one."""
    _, view = await find(runs, run_id, project)
    if view is None or view.state.project_id != project:
        raise RunNotFound(f"run {run_id} not found")
    return view


def cached(runs: RunStates, run_id: str, project: str) -> RunView | None:
    """``find`` among the runs cached here, without a query (possibly behind its stream)."""
    return runs.cached(scoped_id(project, run_id)) or runs.cached(run_id)


async def open_run(runs: RunStates, req: OpenRun, view: RunView | None) -> tuple[RunView, bool]:
    """Create the run (``view`` is ``None``) or resume ``view``: returns the run and whether
    this open created it. ``ConcurrencyError`` if the run moved on since ``view`` was read."""
    if view is None:
        return await _create(runs, req), True
    return await _resume(runs, view, req)


async def open_or_resume(runs: RunStates, req: OpenRun) -> tuple[RunView, bool]:
    """``open_run`` on the freshest run, decided again after each lost race."""
    for _ in range(MAX_TRIES):
        view = await runs.view(req.run_id)
        try:
            return await open_run(runs, req, view)
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"run {req.run_id} kept changing; gave up after {MAX_TRIES} tries")


async def _create(runs: RunStates, req: OpenRun) -> RunView:
    event = queued(
        run_id=req.run_id,
        project_id=req.project_id,
        agent_id=req.agent,
        input=req.input,
        budget_micro_usd=resolve(
            req.budget_micro_usd, None, cents_to_micro(req.defaults.budget_cents)
        ),
        max_steps=req.max_steps,
        trigger="replay" if req.replayed_from else "sdk",
        replayed_from=req.replayed_from,
        replay_from_step=req.replay_from_step if req.replayed_from else None,
        metadata=dict(req.metadata),
    )
    started = ev.RunStarted(attempt=1, worker=req.worker)
    meta = {KEY: req.idempotency_key, CREATED: True}
    return await runs.append_view(None, [event, started], meta=[None, meta])


async def _resume(runs: RunStates, view: RunView, req: OpenRun) -> tuple[RunView, bool]:
    state = view.state
    if (
        req.check_project and state.project_id != req.project_id
    ):  # only an id taken before ids were scoped
        raise Conflict(f"run id {public_id(req.project_id, req.run_id)} is taken; choose another")
    if state.agent_id != req.agent:
        raise InvalidInput(
            f"run {public_id(req.project_id, req.run_id)} belongs to agent "
            f"{state.agent_id!r}, not {req.agent!r}"
        )
    key = req.idempotency_key
    if key is not None and view.start_key == key:
        return view, view.start_created  # a retry of the open that started this attempt
    if state.status in ("queued", "running"):
        # A new attempt: after a crash the fold gives up the step that was in flight, and the
        # model calls it had in flight count in full (their usage is lost with it).
        events: list[ev.RunEvent] = [
            *settled_in_full(state.reservations),
            ev.RunStarted(attempt=state.attempt + 1, worker=req.worker),
        ]
        meta = [None] * (len(events) - 1) + [{KEY: key} if key else None]
        view = await runs.append_view(view, events, meta=meta)
    return view, False
