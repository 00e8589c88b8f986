"""The meter's view of the runs it meters: each run's state (through the run-state repository,
``papayya.runstates``, shared with the rest of the process when one is given), its replayer of
model calls for the current attempt, and the run's lock, so that one process appends to a run
one batch at a time."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from eventstore.protocol import EventStore
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.matcher import Replayer
from papayya.domain.state import RunState
from papayya.errors import ConcurrencyError, StoreUnavailable
from papayya.runstates import RunStates

log = logging.getLogger(__name__)

MAX_RETRIES = 50
LLM_CALLS = frozenset({"llm"})
# How long the meter holds a call through an outage of the store (a Postgres restart) rather
# than lose what it has to record: as long as a call may take at the provider.
OUTAGE_SECONDS = 600.0
OUTAGE_BACKOFF_MAX = 1.0
T = TypeVar("T")


class RunSlot:
    def __init__(
        self, state: RunState, replayer: Replayer, copy_answers: bool, lock: asyncio.Lock
    ) -> None:
        self.state = state
        self.lock = lock
        self.replayer = replayer
        self.copy_answers = copy_answers
        self.attempt = state.attempt
        # Set when a call was refused for budget while others were still in flight: the run
        # ends as budget_exceeded once they have settled.
        self.exceeded: str | None = None


class RunCache:
    def __init__(
        self, store: EventStore, size: int = 10_000, runs: RunStates | None = None
    ) -> None:
        self.store = store
        self.runs = runs if runs is not None else RunStates(store)
        self._slots: OrderedDict[str, RunSlot] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self._size = size

    async def slot(self, run_id: str) -> RunSlot:
        """The run's slot with fresh state; a new attempt gets a new replayer."""
        async with self._loading.setdefault(run_id, asyncio.Lock()):
            # One slot per run, or two locks would guard the same stream.
            slot = self._slots.get(run_id)
            if slot is None:
                return await self._load(run_id)
        self._slots.move_to_end(run_id)
        async with slot.lock:
            await self.refresh(slot)
        if slot.state.attempt != slot.attempt:
            async with self._loading[run_id]:
                if self._slots.get(run_id) is slot:
                    return await self._load(run_id)
                return self._slots[run_id]
        return slot

    async def reload(self, run_id: str) -> RunSlot:
        """The run's slot read afresh, with a replayer at the start of its recording."""
        async with self._loading.setdefault(run_id, asyncio.Lock()):
            return await self._load(run_id)

    async def _load(self, run_id: str) -> RunSlot:
        events = await self.runs.events(run_id)
        state = fold(events)
        found = await self.runs.recording(state, events, LLM_CALLS)
        replayer = Replayer(found.calls, found.until_step)
        slot = RunSlot(state, replayer, found.copied, self.runs.lock(run_id))
        self._slots[run_id] = slot
        while len(self._slots) > self._size:
            evicted, _ = self._slots.popitem(last=False)
            self._loading.pop(evicted, None)
        return slot

    async def refresh(self, slot: RunSlot) -> None:
        """Fold the stream's newer events in; call it holding ``slot.lock``."""
        slot.state = await self.runs.refresh(slot.state)

    async def append(
        self,
        slot: RunSlot,
        decide: Callable[[RunState], Sequence[ev.RunEvent]],
        payloads: Sequence[tuple[bytes, str]] = (),
    ) -> RunState:
        """Decide against the freshest state and append; another process's write in between
        makes it refresh and decide again. An append the store failed (a restart) is tried
        again until it commits, for up to ``OUTAGE_SECONDS``: it may hold what a provider was
        paid for. It may also have committed unseen, so ``decide`` must see its own events in
        the state it is given and then append nothing."""
        async with slot.lock:
            conflicts = 0
            while conflicts < MAX_RETRIES:
                events = decide(slot.state)
                if not events:
                    return slot.state
                try:
                    slot.state = await self.runs.append(slot.state, events, payloads)
                    return slot.state
                except ConcurrencyError:
                    conflicts += 1
                except StoreUnavailable as exc:
                    log.warning("run %s: append failed, trying again: %s", slot.state.run_id, exc)
                await self.through_outage(lambda: self.refresh(slot))
        raise ConcurrencyError(f"run {slot.state.run_id} kept changing")

    async def through_outage(self, action: Callable[[], Awaitable[T]]) -> T:
        """``action()``, tried again while the store is unavailable (``OUTAGE_SECONDS``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTAGE_SECONDS
        delay = 0.05
        while True:
            try:
                return await action()
            except StoreUnavailable:
                if loop.time() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, OUTAGE_BACKOFF_MAX)
