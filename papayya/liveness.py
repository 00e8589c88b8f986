"""Liveness of local runs: runs whose process is the user's own (the SDK), not a worker's.

No worker leases such a run, so nothing would notice its process die. The SDK heartbeats
(``PAPAYYA_HEARTBEAT_SECONDS``, 15 s) into ``run_heartbeats`` while a run is open; a run
whose heartbeat stopped for the lease time (``PAPAYYA_LEASE_SECONDS``, 60 s) shows "no
heartbeat since …", is cancelled at once when asked to (nobody would hear the request), and
after ``PAPAYYA_ABANDON_SECONDS`` (24 h) the sweeper ends it ``failed`` with code
``abandoned``. Opening the same run id before then resumes it as a new attempt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from papayya.errors import InvalidInput
from sql import queries

Q: Final = queries("runtime.sql")
ABANDONED: Final = "abandoned"


def _seconds(name: str, default: float, env: Mapping[str, str] | None) -> float:
    raw = (os.environ if env is None else env).get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 10 * 365 * 86400:
        raise InvalidInput(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def heartbeat_seconds(env: Mapping[str, str] | None = None) -> float:
    return _seconds("PAPAYYA_HEARTBEAT_SECONDS", 15.0, env)


def lease_seconds(env: Mapping[str, str] | None = None) -> float:
    return _seconds("PAPAYYA_LEASE_SECONDS", 60.0, env)


def abandon_seconds(env: Mapping[str, str] | None = None) -> float:
    return _seconds("PAPAYYA_ABANDON_SECONDS", 24 * 3600.0, env)


async def beat(db: Any, run_id: str, attempt: int) -> None:
    """Record that the process of ``run_id``'s attempt is alive."""
    await db.execute(Q["heartbeat"], run_id, attempt)


async def silent(db: Any, run_id: str, seconds: float | None = None) -> bool:
    """Whether ``run_id`` is a local run whose heartbeat stopped (or never came)."""
    wait = lease_seconds() if seconds is None else seconds
    return bool(await db.fetchval(Q["silent_local_run"], run_id, wait))


async def leased(db: Any, run_id: str) -> bool:
    """Whether a worker holds ``run_id`` (a cloud run), rather than the user's own process."""
    return bool(await db.fetchval(Q["leased"], run_id))


async def abandoned(db: Any, seconds: float, limit: int) -> list[tuple[str, int]]:
    rows = await db.fetch(Q["abandoned_runs"], seconds, limit)
    return [(r["run_id"], r["attempt"]) for r in rows]


async def no_heartbeat_since(db: Any, run_id: str) -> datetime | None:
    """When a local running run's heartbeat stopped, if it stopped for the lease time."""
    row = await db.fetchrow(Q["last_heartbeat"], run_id)
    if row is None or row["leased"]:
        return None
    at: datetime = row["at"]
    return at if at < datetime.now(UTC) - timedelta(seconds=lease_seconds()) else None
