"""Record a checkpoint: a finished task (``run.task``) as the run's next step, or a task that
raised as a failed one. The one place the checkpoint's events are built; the durable API, the
runtime API and the SDK's direct mode all record through here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from papayya.domain import events as ev
from papayya.domain.matcher import task_fingerprint
from papayya.domain.state import RunState, StepState
from papayya.errors import ConcurrencyError, Conflict
from papayya.runs import Runs
from papayya.runstates import RunStates, RunView

TASK_ERROR: Final = "task_error"
# Writers racing on one run each win one round, so this many concurrent writers always finish.
MAX_TRIES: Final = 64
ERROR_TEXT: Final = 2000

Meta = Mapping[str, Any]
TaskEvent = ev.StepStarted | ev.CheckpointSaved | ev.StepCompleted | ev.StepFailed


def task_events(
    n: int,
    label: str,
    *,
    duration_ms: float,
    result: Any = None,
    ref: str | None = None,
    error: str | None = None,
    fingerprint: str | None = None,
    at: datetime | None = None,
) -> list[TaskEvent]:
    """Step ``n``: started, then saved and completed with the result (inline or by ``ref``),
    or with ``error`` failed. ``fingerprint`` defaults to the label's."""
    started = ev.StepStarted(step_number=n, step_type="checkpoint", label=label, at=at)
    if error is not None:
        ended = ev.StepFailed(
            step_number=n, error_code=TASK_ERROR, error_message=error, duration_ms=duration_ms,
            at=at,
        )  # fmt: skip
        return [started, ended]
    saved = ev.CheckpointSaved(
        step_number=n,
        label=label,
        fingerprint=task_fingerprint(label) if fingerprint is None else fingerprint,
        result=result,
        result_ref=ref,
        duration_ms=duration_ms,
        at=at,
    )
    return [started, saved, ev.StepCompleted(step_number=n, duration_ms=duration_ms, at=at)]


def recorded_task(
    state: RunState, tasks: Mapping[tuple[str, bool], int], label: str, failed: bool
) -> StepState | None:
    """The step ``label`` already has in the run's current attempt (``tasks`` by
    ``(label, failed)``, as ``RunView.tasks`` keeps them): a retried post."""
    n = tasks.get((label, failed))
    if n is None:
        return None
    step = state.steps[n]
    if failed and step.error_code != TASK_ERROR:
        return None
    return step


async def record_checkpoint(
    runs: Runs,
    state: RunState,
    label: str,
    *,
    duration_ms: float,
    result: Any = None,
    ref: str | None = None,
    error: str | None = None,
    fingerprint: str | None = None,
) -> RunState:
    """Append the task as the freshest state's next step (another writer, the meter for one,
    may move the run on meanwhile: the step is numbered again after a lost race)."""

    def build(s: RunState) -> Sequence[ev.RunEvent]:
        return task_events(
            s.next_step, label, duration_ms=duration_ms, result=result, ref=ref, error=error,
            fingerprint=fingerprint,
        )  # fmt: skip

    return await runs.append_fresh(state, build)


async def record_once(
    runs: RunStates,
    view: RunView,
    reload: Callable[[], Awaitable[RunView]],
    label: str,
    failed: bool,
    events_for: Callable[[int], list[TaskEvent]],
    meta: Sequence[Meta | None] = (),
) -> tuple[RunView, StepState, bool]:
    """Record the task ``label`` of the run's current attempt once: the run, its step, and
    whether this call recorded it (``False``: a retried post, answered with the step the label
    has). A lost race reloads (``reload``) and numbers the step again."""
    for _ in range(MAX_TRIES):
        found = recorded_task(view.state, view.tasks, label, failed)
        if found is not None:
            return view, found, False
        if view.state.status != "running":
            raise Conflict(
                f"run {view.state.run_id} is {view.state.status}; it takes no checkpoints"
            )
        events = events_for(view.state.next_step)
        try:
            view = await runs.append_view(view, events, meta=meta)
        except ConcurrencyError:
            view = await reload()
            continue
        return view, view.state.steps[events[0].step_number], True
    raise ConcurrencyError(
        f"run {view.state.run_id} kept changing; gave up after {MAX_TRIES} tries"
    )
