"""Heartbeats of local runs (``papayya.liveness``): the SDK's, and the runtime API's on an
agent's behalf; whether a worker leases a run; which local runs fell silent; and the last
heartbeat of the agents a worker runs (``workers.timelimits``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from papayya import liveness
from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("workers.sql")


class Heartbeats(Repository):
    async def beat(self, run_id: str, attempt: int) -> None:
        """Record that the process of ``run_id``'s attempt is alive."""
        await liveness.beat(self.pool, run_id, attempt)

    async def leased(self, run_id: str) -> bool:
        """Whether a worker holds ``run_id`` (a cloud run), not the user's own process."""
        return await liveness.leased(self.pool, run_id)

    async def no_heartbeat_since(self, run_id: str) -> datetime | None:
        """When a local running run's heartbeat stopped, if it stopped for the lease time."""
        return await liveness.no_heartbeat_since(self.pool, run_id)

    async def abandoned(self, seconds: float, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` local runs (and their attempts) silent for ``seconds``."""
        return await liveness.abandoned(self.pool, seconds, limit)

    async def of_agents(self, attempts: Mapping[str, int]) -> dict[str, datetime]:
        """The last heartbeat of each of ``attempts``' agents (run id -> attempt) that sent
        one."""
        rows = await self.pool.fetch(Q["agent_heartbeats"], list(attempts), list(attempts.values()))
        return {row["run_id"]: row["at"] for row in rows}
