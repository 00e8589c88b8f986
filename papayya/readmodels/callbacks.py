"""Run callbacks owed and their delivery (DESIGN §8): a row per terminal event of a run that
has a ``callback_url``, written by the callbacks projector in its checkpoint's transaction,
then claimed, retried and closed by the deliverers."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from papayya.readmodels import Conn, Repository
from sql import queries

Q: Final = queries("workers.sql")


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """A ``callback_deliveries`` row; ``attempts`` counts this one once claimed."""

    webhook_id: str
    run_id: str
    project_id: str
    url: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    gave_up_at: datetime | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Delivery:
        return cls(**dict(row))


async def owe(conn: Conn, webhook_id: str, stream_id: str) -> None:
    """Owe the callback of the run ``stream_id`` for its terminal event ``webhook_id`` (on
    the projector's transaction; nothing if the run has no ``callback_url``)."""
    await conn.execute(Q["owe_callback"], webhook_id, stream_id)


class Callbacks(Repository):
    async def claim(self, limit: int, hold_seconds: float) -> list[Delivery]:
        """Up to ``limit`` due deliveries, each held for ``hold_seconds`` while it is
        attempted (another deliverer skips it meanwhile)."""
        rows = await self.pool.fetch(Q["claim_callbacks"], limit, hold_seconds)
        return [Delivery.from_row(r) for r in rows]

    async def delivered(self, webhook_id: str) -> None:
        await self.pool.execute(Q["callback_delivered"], webhook_id)

    async def gave_up(self, webhook_id: str, error: str | None) -> None:
        await self.pool.execute(Q["callback_gave_up"], webhook_id, error)

    async def retry(self, webhook_id: str, delay_seconds: float, error: str | None) -> None:
        """Attempt it again in ``delay_seconds``."""
        await self.pool.execute(Q["callback_retry"], webhook_id, delay_seconds, error)
