"""The benchmarks' runs take thousands of steps, and a run that states no ``max_steps`` gets
its project's default (50 unless the project says otherwise): so a benchmark's project states
no limit, explicitly, before its first run."""

from __future__ import annotations

import asyncpg
import msgspec

from eventstore.migrations import migrate
from papayya.domain.defaults import UNLIMITED
from papayya.readmodels.projects import set_defaults
from papayya.sdk.direct import local_project


async def lift_limits(dsn: str) -> None:
    """Migrate ``dsn`` and give its ``default`` project (made if missing) no limits."""
    await migrate(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        project = await local_project(pool, None)
        async with pool.acquire() as conn, conn.transaction():
            await set_defaults(conn, project, msgspec.structs.asdict(UNLIMITED))
    finally:
        await pool.close()
