"""What the recovery sweeper looks for: workers' leases that expired, queued runs that have
waited a while, and runs holding a budget reservation for longer than any call lasts. The
last two read the runs' stream summaries, which the append writes, so they never lag."""

from __future__ import annotations

from typing import Final

import msgspec

from papayya.models import LeaseOut
from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("workers.sql")


class Lease(msgspec.Struct, frozen=True):
    """A worker's hold on a run's attempt."""

    run_id: str
    attempt: int
    worker: str


class Leases(Repository):
    async def expired(self, limit: int) -> list[Lease]:
        """Up to ``limit`` expired leases, the longest expired first."""
        rows = await self.pool.fetch(Q["expired_leases"], limit)
        return [Lease(r["run_id"], r["attempt"], r["worker"]) for r in rows]

    async def of_run(self, run_id: str) -> LeaseOut | None:
        """The run's lease, if a worker holds one."""
        row = await self.pool.fetchrow(Q["run_lease"], run_id)
        if row is None:
            return None
        return LeaseOut(row["expires_at"], row["renewed_at"], row["expires_in"], row["renewed_ago"])

    async def drop_expired(self, run_id: str, attempt: int) -> None:
        """Drop the attempt's lease if it is still expired (not renewed meanwhile)."""
        await self.pool.execute(Q["drop_expired_lease"], run_id, attempt)

    async def waiting_runs(self, seconds: float, limit: int) -> list[str]:
        """Queued runs whose stream has not moved for ``seconds``, the oldest first."""
        rows = await self.pool.fetch(Q["waiting_runs"], seconds, limit)
        return [r["run_id"] for r in rows]

    async def reserving_runs(self, seconds: float, limit: int) -> list[str]:
        """Runs holding a budget reservation whose stream has not moved for ``seconds``."""
        rows = await self.pool.fetch(Q["reserving_runs"], seconds, limit)
        return [r["run_id"] for r in rows]
