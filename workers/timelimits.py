"""What stops an attempt that would otherwise run for ever (issue 19), seen from the worker.

- **The run's time limit** (``papayya.domain.timelimit``): a timer per attempt, set for the
  run's deadline; when it fires the worker stops the agent (the process killed, the container
  stopped, the built-in loop's task cancelled) and ends the run ``failed`` with code
  ``timeout``. An attempt whose run is out of time already (a retry after a lost worker) is
  not started at all.
- **The agent's heartbeats**: code agents (the ``process`` and ``docker`` runtimes) send one
  every ``PAPAYYA_HEARTBEAT_SECONDS`` through the runtime API, which records the last one in
  ``run_heartbeats`` (Postgres: the one place they are kept). An agent from which the worker
  has read no new heartbeat for longer than the bound (``PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS``,
  by default the lease time; five times that while it starts; ``HeartbeatWatch``) is frozen
  or cut off while its process still runs: it is stopped, and the attempt counts as a crash
  does, so the run is retried from its recording while attempts remain (``AttemptLost``
  with reason ``heartbeat_lost``) and then fails with code ``heartbeat_lost``. The built-in
  loop runs in the worker itself and sends none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from papayya.commands.finish import failed
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.domain.timelimit import HEARTBEAT_LOST, TIMEOUT, deadline, timeout_message
from papayya.readmodels.heartbeats import Heartbeats

# Before its first heartbeat an agent is starting (importing its code, which for big
# libraries takes a while): it may stay silent this many times the bound.
STARTING_FACTOR: Final = 5
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


class Quiet:
    """How long, in the worker's clock, it has read no new heartbeat of one attempt."""

    def __init__(self, now: float) -> None:
        self.since = now  # the attempt's start: its agent has not sent one yet
        self.last: datetime | None = None

    def saw(self, at: datetime | None, now: float) -> float:
        if at is not None and at != self.last:
            self.last, self.since = at, now
        return now - self.since


class HeartbeatWatch:
    """A worker's view of its agents' heartbeats. An agent is silent for as long as the
    worker has read no new heartbeat of its attempt, in the worker's own clock (no skew with
    the database's), counted from the attempt's start (with ``STARTING_FACTOR`` times the
    bound until its first heartbeat), and again from the first read that works after reads
    failed: with Postgres away the API could not record heartbeats either, and that silence
    is nobody's fault."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._quiet: dict[tuple[str, int], Quiet] = {}
        self._unread = False

    def started(self, run_id: str, attempt: int) -> None:
        self._quiet[run_id, attempt] = Quiet(asyncio.get_running_loop().time())

    def ended(self, run_id: str, attempt: int) -> None:
        self._quiet.pop((run_id, attempt), None)

    async def silent(self, heartbeats: Heartbeats, attempts: Mapping[str, int]) -> dict[str, float]:
        """Of ``attempts`` (run id → attempt), the runs whose agent has been silent for
        longer than the bound, with for how long."""
        watched = [(r, a) for r, a in attempts.items() if (r, a) in self._quiet]
        if not watched:
            return {}
        try:
            seen = await heartbeats.of_agents(dict(watched))
        except Exception:
            self._unread = True
            raise
        now = asyncio.get_running_loop().time()
        silent = {}
        for key in watched:
            quiet = self._quiet[key]
            if self._unread:
                quiet.since = max(quiet.since, now)
            silent_for = quiet.saw(seen.get(key[0]), now)
            if silent_for > self.bound * (1 if quiet.last is not None else STARTING_FACTOR):
                silent[key[0]] = silent_for
        self._unread = False
        return silent


def heartbeat_message(attempt: int, max_attempts: int, silent_for: float, bound: float) -> str:
    return (
        f"attempt {attempt} of {max_attempts}: the agent sent no heartbeat for "
        f"{silent_for:.1f} s (PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS is {bound:g} s; "
        f"{STARTING_FACTOR} times that before its first heartbeat): "
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
