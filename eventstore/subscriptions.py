"""Subscriptions: one tailer per store fanning out to bounded per-subscriber queues.

A subscription starts in catch-up mode, reading pages from the store after its cursor. Once a
page proves it has seen everything up to the tailer's position, it attaches to the tailer and
receives live events through its queue. A subscriber whose queue overflows is detached: it
drains what it has, then catches up from the database again. Memory stays bounded and nothing
is skipped, because the attach decision and the fan-out run on one event loop without an await
between them.

The tailer reads only what its subscriptions want: the union of their filters (``wanted``), so
a process that follows a few event types (a worker's cancellations and ends) does not fetch
and decode every event of the installation on every commit. A subscription counts from its
creation, while it catches up too; one that appeared during a read that may have left out its
events is not attached until a read that includes them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Awaitable, Callable
from types import TracebackType

from eventstore.types import NO_FILTERS, Cursor, Filters, ReadPage, RecordedEvent

log = logging.getLogger(__name__)

# Past this many streams, the tailer's read asks for any stream (a long id list costs more
# than the events it leaves out).
MAX_TAILED_STREAMS = 100

Names = frozenset[str] | None
ReadPageFn = Callable[[Cursor, int, Filters], Awaitable[ReadPage]]
HeadFn = Callable[[], Awaitable[Cursor]]


class Hub:
    """The shared tailer of one store."""

    def __init__(
        self,
        read_page: ReadPageFn,
        head: HeadFn,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.5,
        fast_poll_interval: float = 0.005,
        min_read_interval: float = 0.002,
        pending: Callable[[Cursor], bool] = lambda cursor: False,
        on_start: Callable[[], None] = lambda: None,
    ) -> None:
        self.read_page = read_page
        self._head = head
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.fast_poll_interval = fast_poll_interval
        self.min_read_interval = min_read_interval
        self._pending = pending
        self._on_start = on_start
        self._subscribers: weakref.WeakSet[Subscription] = weakref.WeakSet()
        # Every open subscription, attached or catching up: what the tailer reads for.
        self._interested: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._reading: Filters | None = None  # what the read in flight asked for
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self.position: Cursor | None = None

    def wake(self) -> None:
        """Ask the tailer to read now (after a local commit or a NOTIFY)."""
        self._wake.set()

    async def ensure_started(self) -> None:
        async with self._start_lock:
            if self._task is None:
                self.position = await self._head()
                self._task = asyncio.create_task(self._tail(), name="eventstore-tailer")
                self._on_start()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def try_attach(self, subscription: Subscription) -> bool:
        """Attach if the subscription has seen everything up to the tailer's position.

        Runs without awaiting, so no fan-out can happen between the check and the attach.
        """
        if self.position is None or subscription.cursor < self.position:
            return False
        if self._reading is not None and not covers(self._reading, subscription.filters):
            return False  # the read in flight may leave out its events: attach after it
        subscription.floor = subscription.cursor
        self._subscribers.add(subscription)
        return True

    def detach(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def interest(self, subscription: Subscription) -> None:
        """Count ``subscription``'s filters in what the tailer reads, from now on."""
        self._interested.add(subscription)

    def forget(self, subscription: Subscription) -> None:
        self._interested.discard(subscription)
        self._subscribers.discard(subscription)

    def wanted(self) -> Filters:
        """What the tailer's next read asks for: every open subscription's events."""
        return union([s.filters for s in self._interested])

    async def _tail(self) -> None:
        backoff = 0.05
        while True:
            self._wake.clear()
            assert self.position is not None
            self._reading = self.wanted()
            try:
                page = await self.read_page(self.position, self.batch_size, self._reading)
            except asyncio.CancelledError:
                self._reading = None
                raise
            except Exception as exc:  # the database went away: keep trying, subscribers wait
                self._reading = None
                log.warning("event tailer read failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            self._fan_out(page.events)
            self.position = max(self.position, page.cursor)
            self._reading = None
            if len(page.events) >= self.batch_size:
                continue
            timeout = self.fast_poll_interval if self._pending(page.cursor) else self.poll_interval
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation
            # that lands just as the wake-up fires, and close() would then wait forever.
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                # Under a stream of commits every one would wake a read: gather them for a
                # few milliseconds so one read serves many (bench/gateway.py: a read per call).
                await asyncio.sleep(self.min_read_interval)
            except TimeoutError:
                pass

    def _fan_out(self, events: list[RecordedEvent]) -> None:
        if not events:
            return
        for subscription in list(self._subscribers):
            queue = subscription.queue
            for event in events:
                if event.cursor <= subscription.floor or not subscription.filters.matches(event):
                    continue
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    # Too slow to keep up: it drains its queue, then reads from the database.
                    self._subscribers.discard(subscription)
                    subscription.overflowed = True
                    break


def union(filters: list[Filters]) -> Filters:
    """Filters matching every event any of ``filters`` matches (and maybe more); none of
    them: filters that match nothing."""
    if not filters:
        return Filters(categories=frozenset())

    def joined(values: list[Names], cap: int | None = None) -> Names:
        if any(v is None for v in values):
            return None
        names: frozenset[str] = frozenset().union(*(v for v in values if v is not None))
        return None if cap is not None and len(names) > cap else names

    return Filters(
        joined([f.categories for f in filters]),
        joined([f.types for f in filters]),
        joined([f.streams for f in filters], MAX_TAILED_STREAMS),
    )


def covers(outer: Filters, inner: Filters) -> bool:
    """Whether every event ``inner`` matches is one ``outer`` matches."""

    def within(big: Names, small: Names) -> bool:
        return big is None or (small is not None and small <= big)

    return (
        within(outer.categories, inner.categories)
        and within(outer.types, inner.types)
        and within(outer.streams, inner.streams)
    )


class Subscription:
    """An async iterator of recorded events: catch-up, then live. Resumable from any cursor."""

    def __init__(
        self,
        hub: Hub,
        after: Cursor,
        filters: Filters = NO_FILTERS,
        queue_size: int = 1000,
        page_size: int = 1000,
    ) -> None:
        self._hub = hub
        self.filters = filters
        self.cursor = after  # everything up to here has been yielded or proven irrelevant
        self.floor = after  # the tailer delivers only events after this
        self.queue: asyncio.Queue[RecordedEvent] = asyncio.Queue(maxsize=queue_size)
        self.overflowed = False
        self._attached = False
        self._buffer: collections.deque[RecordedEvent] = collections.deque()
        self._scanned = after
        self._page_size = page_size
        self._closed = False
        hub.interest(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> RecordedEvent:
        if self._closed:
            raise StopAsyncIteration
        while True:
            if self._buffer:
                event = self._buffer.popleft()
                self.cursor = event.cursor
                return event
            if self._attached:
                if self.overflowed and self.queue.empty():
                    self._attached = False
                    self.overflowed = False
                    continue
                event = await self.queue.get()
                self.cursor = event.cursor
                return event
            await self._catch_up()

    async def _catch_up(self) -> None:
        self.cursor = max(self.cursor, self._scanned)
        await self._hub.ensure_started()
        page = await self._hub.read_page(self.cursor, self._page_size, self.filters)
        self._buffer.extend(page.events)
        self._scanned = page.cursor
        if page.events:
            return
        self.cursor = max(self.cursor, page.cursor)
        if self._hub.try_attach(self):
            self._attached = True
        else:
            # The tailer is ahead of what this read could see: read again soon.
            await asyncio.sleep(0.001)

    async def close(self) -> None:
        self._closed = True
        self._hub.forget(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
