"""Projects' rate cards (their own prices, which override the price package's).

It needs only the pool (no event is appended with a card), so it takes that: the metering
core builds it in processes that hold a pool but no server (``RateCardCache``)."""

from __future__ import annotations

from typing import Final

import asyncpg

from sql import queries

Q: Final = queries("control.sql")


class RateCards:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, project_id: str) -> str | None:
        """The project's rate card as JSON text, ``None`` if it has none."""
        raw: str | None = await self.pool.fetchval(Q["rate_card"], project_id)
        return raw

    async def put(self, project_id: str, card_json: str) -> None:
        await self.pool.execute(Q["put_rate_card"], project_id, card_json)
