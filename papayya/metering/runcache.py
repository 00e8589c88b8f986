"""The meter's view of the runs it meters: per run, its replayer of model calls for the current
attempt and the run's lock (so that one process appends to a run one batch at a time). The
run's state itself lives in the run-state repository (``papayya.runstates.RunStates``, shared
with the rest of the process when one is given): a slot reads the repository's cached state,
so what the process's other writers of the run append is seen here without a query.

A live call decides on the cached state without reading the stream first (``RunCache.cached``):
another process's write since then makes the append lose on its expected version, and the
call is decided again on the caught-up state. A decision to append nothing (a refusal) is
never trusted on a state that may be behind: ``RunCache.append`` catches up and decides again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
# Decisions queued on a run's lock that one append may carry (with their payloads).
MAX_BATCH = 64
LLM_CALLS = frozenset({"llm"})
# How long the meter holds a call through an outage of the store (a Postgres restart) rather
# than lose what it has to record: as long as a call may take at the provider.
OUTAGE_SECONDS = 600.0
OUTAGE_BACKOFF_MAX = 1.0
T = TypeVar("T")


Decide = Callable[[RunState], Sequence[ev.RunEvent]]


@dataclass(eq=False)
class _Queued:
    """A decision waiting for its turn on the run; its caller awaits ``done``."""

    decide: Decide
    payloads: Sequence[tuple[bytes, str]]
    done: asyncio.Future[RunState] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, state: RunState) -> None:
        if not self.done.done():
            self.done.set_result(state)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class RunSlot:
    def __init__(
        self,
        runs: RunStates,
        state: RunState,
        replayer: Replayer,
        copy_answers: bool,
        lock: asyncio.Lock,
    ) -> None:
        self._runs = runs
        self._state = state
        self.lock = lock
        # Decisions waiting for the lock, appended together by one drain task at a time.
        self.queued: deque[_Queued] = deque()
        self.draining = False
        self.replayer = replayer
        self.copy_answers = copy_answers
        self.attempt = state.attempt
        # Set when a call was refused for budget while others were still in flight: the run
        # ends as budget_exceeded once they have settled.
        self.exceeded: str | None = None

    @property
    def state(self) -> RunState:
        """The newest state of the run this process has seen: the repository's, when another
        writer of this process moved it on (or this slot's own, if the repository let it go)."""
        view = self._runs.cached(self._state.run_id)
        if view is not None and view.state.version > self._state.version:
            self._state = view.state
        return self._state

    @state.setter
    def state(self, state: RunState) -> None:
        self._state = state


class RunCache:
    def __init__(
        self, store: EventStore, size: int = 10_000, runs: RunStates | None = None
    ) -> None:
        self.store = store
        self.runs = runs if runs is not None else RunStates(store)
        self._slots: OrderedDict[str, RunSlot] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self._size = size
        self._drains: set[asyncio.Future[None]] = set()

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

    def cached(self, run_id: str) -> RunSlot | None:
        """The run's slot as last seen in this process, without a query; ``None`` if it is
        not held or a new attempt has started since its replayer was built. Only for a call
        whose decision an append checks again (its expected version)."""
        slot = self._slots.get(run_id)
        if slot is None or slot.state.attempt != slot.attempt:
            return None
        self._slots.move_to_end(run_id)
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
        slot = RunSlot(self.runs, state, replayer, found.copied, self.runs.lock(run_id))
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
        decide: Decide,
        payloads: Sequence[tuple[bytes, str]] = (),
    ) -> RunState:
        """Decide on the slot's state and append; another process's write since that state
        makes the append lose on its expected version, and it catches up and decides again.
        A decision to append nothing is only final on a state just read from the stream: on
        the cached one (perhaps behind) it catches up and decides again. An append the store
        failed (a restart) is tried again until it commits, for up to ``OUTAGE_SECONDS``: it
        may hold what a provider was paid for. It may also have committed unseen, so
        ``decide`` must see its own events in the state it is given and then append nothing.

        Decisions that queue on the run's lock meanwhile are taken in their order and
        appended together, each decided on the state the ones before it lead to (so each
        sees the others' reservations): one commit for many calls of one run."""
        mine = _Queued(decide, payloads)
        slot.queued.append(mine)
        if not slot.draining:
            slot.draining = True
            task = asyncio.ensure_future(self._drain(slot))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        # A caller cancelled before its decision was taken is never decided (its future is
        # cancelled); one taken already commits or not with its batch, as an append would.
        return await mine.done

    async def _drain(self, slot: RunSlot) -> None:
        """Under the run's lock, append what is queued on the slot, a batch at a time. A
        task of its own, so that a caller who goes away does not leave the others waiting."""
        try:
            async with slot.lock:
                while slot.queued:
                    n = min(len(slot.queued), MAX_BATCH)
                    batch = [slot.queued.popleft() for _ in range(n)]
                    try:
                        await self._append_batch(slot, batch)
                    except Exception as exc:  # the store stayed away past OUTAGE_SECONDS
                        for queued in batch:
                            queued.fail(exc)
        except asyncio.CancelledError:
            for queued in [*slot.queued]:
                queued.done.cancel()
            slot.queued.clear()
            raise
        finally:
            slot.draining = False

    async def _append_batch(self, slot: RunSlot, batch: list[_Queued]) -> None:
        """Decide each of ``batch`` in turn and append what they decided in one append;
        resolve or fail every one. A decision that raises (an illegal event, a budget the
        fold refuses) fails its own caller only."""
        conflicts = 0
        caught_up = False
        while conflicts < MAX_RETRIES:
            base = state = slot.state
            events: list[ev.RunEvent] = []
            payloads: list[tuple[bytes, str]] = []
            any_empty = False
            for queued in batch:
                if queued.done.done():
                    continue
                try:
                    decided = list(queued.decide(state))
                    if decided and len(batch) > 1:
                        # The domain's rules, the budget's too, for this decision alone (the
                        # append's own fold checks a batch of one).
                        state = fold(decided, state)
                except Exception as exc:
                    queued.fail(exc)
                    continue
                if decided:
                    events += decided
                    payloads += queued.payloads
                else:
                    any_empty = True
            if any_empty and not caught_up:
                caught_up = True
                await self.through_outage(lambda: self.refresh(slot))
                continue
            if not events:
                break
            try:
                slot.state = await self.runs.append(base, events, payloads)
                break
            except ConcurrencyError:
                conflicts += 1
            except StoreUnavailable as exc:
                log.warning("run %s: append failed, trying again: %s", base.run_id, exc)
            except Exception as exc:
                for queued in batch:
                    queued.fail(exc)
                return
            await self.through_outage(lambda: self.refresh(slot))
            caught_up = True
        else:
            for queued in batch:
                queued.fail(ConcurrencyError(f"run {slot.state.run_id} kept changing"))
            return
        for queued in batch:
            queued.resolve(slot.state)

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
