"""The ``costs`` projector: model spend per project, agent, model and UTC day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Final

import asyncpg

from eventstore.protocol import EventStore
from papayya.domain.events import LlmCallRecorded, RunQueued, from_recorded
from papayya.domain.state import Usage
from papayya.errors import InvalidEvent
from projections.lru import Lru
from projections.projector import Envelope, Projector, utc
from projections.runs import RUN_CATEGORY

Key = tuple[str, str, str, date]  # project, agent, model, day
# input tokens, output tokens, cached tokens, cost, calls
_FIELDS: Final = 5


class CostsProjector(Projector):
    """Adds each ``LlmCallRecorded`` to its day's row. The sums are additive, so they are
    right only because the runner commits the checkpoint in the same transaction."""

    name = "costs"
    categories = frozenset({RUN_CATEGORY})
    tables = ("costs",)

    def __init__(self, store: EventStore, *, suffix: str = "", cache_size: int = 16384) -> None:
        super().__init__(store, suffix=suffix)
        # run stream -> (project, agent): fixed by RunQueued, so a memo never goes stale.
        self._owners: Lru[str, tuple[str, str]] = Lru(cache_size)

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        totals: dict[Key, list[int]] = {}
        for recorded, event in batch:
            if isinstance(event, RunQueued):
                self._owners.put(recorded.stream_id, (event.project_id, event.agent_id))
            elif isinstance(event, LlmCallRecorded):
                project, agent = await self._owner(recorded.stream_id)
                day = utc(event.at or recorded.recorded_at).date()
                row = totals.setdefault((project, agent, event.model, day), [0] * _FIELDS)
                usage = Usage().plus(event)
                row[0] += usage.total_input_tokens
                row[1] += usage.total_output_tokens
                row[2] += usage.cached_input_tokens
                row[3] += usage.cost_micro_usd
                row[4] += 1
        if totals:
            keys = list(totals)
            columns = [[key[i] for key in keys] for i in range(4)]
            sums = [[totals[key][i] for key in keys] for i in range(_FIELDS)]
            await conn.execute(self.sql("add_costs"), *columns, *sums)

    async def _owner(self, stream_id: str) -> tuple[str, str]:
        owner = self._owners.get(stream_id)
        if owner is not None:
            return owner
        first = await self.store.read_stream(stream_id, 1, 1)
        queued = from_recorded(first[0]) if first else None
        if not isinstance(queued, RunQueued):
            raise InvalidEvent(f"stream {stream_id} does not start with RunQueued")
        owner = (queued.project_id, queued.agent_id)
        self._owners.put(stream_id, owner)
        return owner
