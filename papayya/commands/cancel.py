"""Cancel a run: a queued one never starts; a running one is asked to stop, and its worker
records ``RunCancelled`` once the agent has stopped. A local run (the SDK's) whose heartbeat
stopped has nobody to hear the request: it is cancelled at once. An ended run cannot be
cancelled (409)."""

from __future__ import annotations

from papayya import liveness
from papayya.commands.owned import own
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.errors import Conflict
from papayya.runs import Runs


def cancel_events(state: RunState, reason: str | None = None) -> list[ev.RunEvent]:
    """What cancelling appends (nothing if the run was asked to stop already)."""
    if state.is_terminal:
        raise Conflict(f"run {state.run_id} is already {state.status}")
    if state.status == "queued":
        return [ev.CancelRequested(reason=reason), ev.RunCancelled(reason=reason)]
    if state.cancel_requested:
        return []
    return [ev.CancelRequested(reason=reason)]


async def cancel_run(runs: Runs, project: str, run_id: str, reason: str | None) -> RunState:
    pool = getattr(runs.store, "pool", None)
    gone = pool is not None and await liveness.silent(pool, run_id)

    def decide(state: RunState) -> list[ev.RunEvent]:
        events = [*cancel_events(own(state, project, run_id), reason)]
        if gone and state.status == "running":
            events.append(ev.RunCancelled(reason=reason))
        return events

    return await runs.execute(run_id, decide)
