"""Projects' rate cards, re-read at most every few seconds: they change rarely, calls are many."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

import asyncpg

from eventstore.postgres import PostgresEventStore
from papayya.pricing import RATE_CARD_DECODER, RateCardEntry
from papayya.readmodels.ratecards import RateCards

TTL_SECONDS: Final = 5.0


class RateCardCache:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.cards = RateCards(pool)
        self._cards: dict[str, tuple[float, dict[str, RateCardEntry]]] = {}

    async def __call__(self, project_id: str) -> Mapping[str, RateCardEntry]:
        hit = self._cards.get(project_id)
        if hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
            return hit[1]
        raw = await self.cards.get(project_id)
        card = RATE_CARD_DECODER.decode(raw) if raw else {}
        self._cards[project_id] = (time.monotonic(), card)
        return card

    @classmethod
    def of(cls, store: PostgresEventStore) -> RateCardCache:
        """The cache over the store's database."""
        return cls(store.pool)

    def forget(self, project_id: str) -> None:
        self._cards.pop(project_id, None)
