"""Idempotency keys of run creation (``papayya.commands.queue.IdempotencyKeys``): the
``run_idempotency`` table, a key claimed by a conditional insert."""

from __future__ import annotations

from typing import Final

from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("api.sql")


class IdempotencyKeys(Repository):
    async def claim(self, project_id: str, key: str, run_id: str) -> bool:
        """Name ``run_id`` by ``key``; ``False`` if the key names a run already."""
        return bool(await self.pool.fetchval(Q["claim_idempotency_key"], project_id, key, run_id))

    async def run_of(self, project_id: str, key: str) -> str:
        """The run ``key`` names (claimed before)."""
        return str(await self.pool.fetchval(Q["idempotent_run"], project_id, key))
