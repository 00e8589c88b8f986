"""What stops an attempt that would otherwise run for ever (issue 19), seen from the worker.

- **The run's time limit** (``papayya.domain.timelimit``): a timer per attempt, set for the
  run's deadline; when it fires the worker stops the agent (the process killed, the container
  stopped, the built-in loop's task cancelled) and ends the run ``failed`` with code
  ``timeout``. An attempt whose run is out of time already (a retry after a lost worker) is
  not started at all.
- **The agent's heartbeats**: code agents (the ``process`` and ``docker`` runtimes) send one
  every ``PAPAYYA_HEARTBEAT_SECONDS`` through the runtime API, which records the last one in
  ``run_heartbeats`` (Postgres: the one place they are kept). An agent whose last heartbeat
  for its attempt, or whose start when it has sent none, is older than the bound
  (``PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS``, by default the lease time) is frozen or cut off
  while its process still runs: it is stopped, and the attempt counts as a crash does, so
  the run is retried from its recording while attempts remain (``AttemptLost`` with reason
  ``heartbeat_lost``) and then fails with code ``heartbeat_lost``. The built-in loop runs in
  the worker itself and sends none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from papayya.commands.finish import failed
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.domain.timelimit import HEARTBEAT_LOST, TIMEOUT, deadline, timeout_message
from sql import queries

Q: Final = queries("workers.sql")
# Runtimes whose agents send heartbeats (papayya.runtime.main); the built-in loop does not.
HEARTBEATING: Final = frozenset(("process", "docker"))


def arm_deadline(state: RunState, expire: Callable[[], None]) -> asyncio.TimerHandle | None:
    """Call ``expire`` when the run's time is up; now, before the attempt starts anything,
    if it is up already (a retry after a lost worker)."""
    at = deadline(state)
    if at is None:
        return None
    delay = (at - datetime.now(UTC)).total_seconds()
    if delay <= 0:
        expire()
        return None
    return asyncio.get_running_loop().call_later(delay, expire)


async def silent_agents(
    db: Any, watched: Mapping[str, tuple[int, float]], bound: float
) -> dict[str, float]:
    """Of ``watched`` (run id → its attempt and the loop time its agent started), the runs
    whose agent has sent no heartbeat for more than ``bound`` seconds, with for how long."""
    ids = list(watched)
    rows = await db.fetch(Q["agent_heartbeat_ages"], ids, [watched[r][0] for r in ids])
    now = asyncio.get_running_loop().time()
    silent = {}
    for row in rows:
        run_id = row["run_id"]
        age = row["age"] if row["age"] is not None else now - watched[run_id][1]
        if age > bound:
            silent[run_id] = float(age)
    return silent


def heartbeat_message(attempt: int, max_attempts: int, silent_for: float, bound: float) -> str:
    return (
        f"attempt {attempt} of {max_attempts}: the agent sent no heartbeat for "
        f"{silent_for:.1f} s (the bound is {bound:g} s, PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS): "
        "it was frozen or cut off, and was stopped"
    )


def stopped_outcome(
    state: RunState,
    reason: str,
    max_attempts: int,
    silent_for: float,
    bound: float,
    worker: str,
) -> list[ev.RunEvent]:
    """How an attempt stopped for ``reason`` (``timeout`` or ``heartbeat_lost``) ends."""
    if reason == TIMEOUT:
        return failed(TIMEOUT, timeout_message(state))
    if state.attempt >= max_attempts:
        return failed(
            HEARTBEAT_LOST, heartbeat_message(state.attempt, max_attempts, silent_for, bound)
        )
    return [ev.AttemptLost(attempt=state.attempt, reason=HEARTBEAT_LOST, worker=worker)]


__all__ = ["HEARTBEATING", "HEARTBEAT_LOST", "TIMEOUT", "arm_deadline", "silent_agents"]
