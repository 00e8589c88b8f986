"""A project's runs: another project's run answers exactly like a missing one."""

from __future__ import annotations

from papayya.domain.state import RunState
from papayya.errors import RunNotFound
from papayya.runs import Runs


def own(state: RunState, project: str, run_id: str | None = None) -> RunState:
    """``state`` if ``project`` owns it; ``RunNotFound`` otherwise."""
    if state.project_id != project:
        raise RunNotFound(f"run {run_id or state.run_id} not found")
    return state


async def load_own(runs: Runs, project: str, run_id: str) -> RunState:
    """The project's run ``run_id``, caught up with its stream."""
    return own(await runs.load(run_id), project, run_id)
