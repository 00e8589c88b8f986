"""Workers' leases on the attempts they run (taken with a claim, renewed every heartbeat,
dropped with the outcome), and what the recovery sweeper looks for: leases that expired,
queued runs that have waited a while, and runs holding a budget reservation for longer than
any call lasts. The last two read the runs' stream summaries, which the append writes, so
they never lag."""

from __future__ import annotations

from typing import Final

import msgspec

from papayya.models import LeaseOut
from papayya.readmodels import Repository
from papayya.runs import run_stream
from sql import queries

Q: Final = queries("workers.sql")


class Lease(msgspec.Struct, frozen=True):
    """A worker's hold on a run's attempt."""

    run_id: str
    attempt: int
    worker: str


class Leases(Repository):
    # -- a worker's own ------------------------------------------------------------------

    async def take(self, run_id: str, attempt: int, worker: str, seconds: float) -> None:
        """Take the lease for ``attempt`` before claiming it (so a worker that dies in
        between leaves a lease to expire), unless a claim of that attempt holds it."""
        await self.pool.execute(Q["take_lease"], run_id, attempt, worker, seconds)

    async def hold(self, run_id: str, attempt: int, worker: str, seconds: float) -> None:
        """Hold the lease of the attempt this worker's claim started."""
        await self.pool.execute(Q["hold_lease"], run_id, attempt, worker, seconds)

    async def release_claim(self, run_id: str, attempt: int, worker: str) -> None:
        """Give back the lease a lost claim took for an attempt nobody started."""
        await self.pool.execute(Q["release_claim"], run_id, attempt, worker)

    async def renew(self, worker: str, run_ids: list[str], seconds: float) -> set[str]:
        """Renew ``worker``'s leases on ``run_ids``; the runs it still holds."""
        rows = await self.pool.fetch(Q["renew_leases"], worker, run_ids, seconds)
        return {r["run_id"] for r in rows}

    async def drop(self, run_id: str, worker: str) -> None:
        """Drop ``worker``'s lease on the run (its attempt's outcome is recorded)."""
        await self.pool.execute(Q["drop_lease"], run_id, worker)

    async def stopping(self, run_ids: list[str]) -> list[str]:
        """Those of ``run_ids`` asked to stop (cancellation) or ended without the worker."""
        rows = await self.pool.fetch(Q["stopping_runs"], [run_stream(r) for r in run_ids])
        return [r["run_id"] for r in rows]

    # -- the sweeper's -------------------------------------------------------------------

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
