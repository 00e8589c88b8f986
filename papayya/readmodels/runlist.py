"""Runs found by something other than their id: a project's runs, newest first, from the
stream summaries the append writes (so a run is listed as soon as its creation commits), and
the run an event belongs to (whether a retried report was appended already)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import msgspec

from papayya.readmodels import Repository
from sql import queries

Q: Final = queries("api.sql")
QR: Final = queries("runtime.sql")
_decode = msgspec.json.decode


class RunList(Repository):
    async def page(
        self,
        project_id: str,
        agent: str | None,
        status: str | None,
        after: tuple[datetime | None, str | None],
        limit: int,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` run summaries of the project after the cursor ``after`` (queued
        at, run id), newest first; ``agent`` is an agent's id or slug."""
        rows = await self.pool.fetch(Q["list_runs"], project_id, agent, status, *after, limit)
        return [_decode(r[0]) for r in rows]

    async def reported(self, event_id: uuid.UUID) -> str | None:
        """The run the event ``event_id`` was appended to, if it was."""
        row = await self.pool.fetchrow(QR["reported"], event_id)
        return None if row is None else str(row["run_id"])
