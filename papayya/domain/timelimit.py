"""A run's time limit (``timeout_seconds``): how long a run may take, and when it is up.

The limit is the run's wall time, not an attempt's: it counts from the run's first start,
across every later attempt (a run retried after a crash does not get a fresh hour, as a
hosted product's run timeout would not), and restarts only when a user resumes the run
(``RunResumed``: a budget top-up). Time spent queued before the first start does not count.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from papayya.domain.bounds import DEFAULT_TIMEOUT_SECONDS
from papayya.domain.state import RunState

TIMEOUT: Final = "timeout"
HEARTBEAT_LOST: Final = "heartbeat_lost"


def limit_seconds(state: RunState) -> int:
    """The run's limit; runs queued before limits existed have the default."""
    return state.timeout_seconds or DEFAULT_TIMEOUT_SECONDS


def deadline(state: RunState) -> datetime | None:
    """When the run's time is up (``None`` until it starts)."""
    start = state.clock_started_at or state.started_at
    if start is None:
        return None
    return start + timedelta(seconds=limit_seconds(state))


def timeout_message(state: RunState) -> str:
    return f"the run exceeded its time limit of {limit_seconds(state)} s (timeout_seconds)"
