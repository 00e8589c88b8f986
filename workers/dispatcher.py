"""The dispatcher: tails the event store and enqueues every run that becomes queued.

It is a projector without tables: each batch's enqueues happen before its checkpoint commits,
so a crash between the two enqueues again (harmless, see ``workers.queue``) and never loses
one; an enqueue after the Postgres commit of a ``RunQueued`` cannot be lost either, since the
event is what is tailed. One dispatcher leads at a time (the runner's advisory lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import asyncpg

from eventstore.protocol import EventStore
from papayya.domain import events as ev
from projections.projector import Envelope, Projector
from workers.queue import RunQueue

# The events after which a run is queued: new, resumed after a budget top-up, or lost by
# its worker and waiting for a new attempt.
QUEUEING: tuple[type[ev.Event], ...] = (ev.RunQueued, ev.RunResumed, ev.AttemptLost)


class Dispatcher(Projector):
    name: ClassVar[str] = "dispatcher"
    categories: ClassVar[frozenset[str]] = frozenset({"run"})
    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, store: EventStore, queue: RunQueue | None = None, suffix: str = "") -> None:
        super().__init__(store, suffix=suffix)
        self.queue = queue

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        assert self.queue is not None
        # Runs queued and already started (or ended) within the batch need no message: the
        # local SDK's durable runs start in the very append that queues them.
        waiting: dict[str, None] = {}
        for envelope in batch:
            run_id = envelope.recorded.stream_id.removeprefix("run-")
            if isinstance(envelope.event, QUEUEING):
                waiting[run_id] = None
            elif isinstance(envelope.event, ev.RunStarted | ev.RunCancelled | ev.RunFailed):
                waiting.pop(run_id, None)
        for run_id in waiting:
            await self.queue.enqueue(run_id)
