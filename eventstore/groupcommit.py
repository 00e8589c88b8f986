"""Group commit: concurrent appends share one transaction, hence one commit and one WAL flush.

A caller queues its append and waits on a future. While fewer than ``max_inflight`` groups are
in flight, a queued append starts a leader task at once, so an append that arrives alone goes
straight to the database (no timer, no added latency). Otherwise it waits for a running
leader, which takes its share of what is queued (the queue over the free group slots, up to
``max_items`` appends and ``max_bytes``) as its next group when its current one has
committed: the busier the store, the larger the groups.

The leader, not the caller, runs the group: a caller cancelled while it waits only drops its
own result (an append not yet taken is skipped; one already taken commits or not with its
group, whole either way), and the group's transaction is never interrupted halfway.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Queued(Generic[T, R]):
    """One caller's append and the future its result or error is delivered through."""

    item: T
    size: int
    future: asyncio.Future[R] = field(repr=False)

    def resolve(self, result: R) -> None:
        if not self.future.done():  # its caller may have been cancelled meanwhile
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if self.future.done():
            return
        if isinstance(exc, asyncio.CancelledError):
            self.future.cancel()
        else:
            self.future.set_exception(exc)


class GroupCommit(Generic[T, R]):
    """Batches items for ``run``, which must resolve or fail every ``Queued`` it is given."""

    def __init__(
        self,
        run: Callable[[list[Queued[T, R]]], Awaitable[None]],
        *,
        max_items: int = 256,
        max_bytes: int = 4 * 1024 * 1024,
        max_inflight: int = 2,
    ) -> None:
        self._run = run
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_inflight = max_inflight
        self._queue: deque[Queued[T, R]] = deque()
        self._leaders = 0
        self._running = 0  # leaders whose group is in the database now
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T, size: int) -> R:
        """Queue ``item`` (``size`` bytes, for the group's bound) and wait for its result."""
        queued: Queued[T, R] = Queued(item, size, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._leaders < self.max_inflight:
            self._leaders += 1
            self.spawn(self._lead())
        return await queued.future

    def spawn(self, work: Awaitable[None]) -> None:
        """Run ``work`` as a task that ``close`` waits for (follow-ups of a group, say)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lead(self) -> None:
        try:
            while group := self._take():
                self._running += 1
                try:
                    await self._run(group)
                except BaseException as exc:  # a bug or a cancelled leader: nobody hangs
                    for queued in group:
                        queued.fail(exc)
                    if not isinstance(exc, Exception):
                        raise
                finally:
                    self._running -= 1
        finally:
            self._leaders -= 1

    def _take(self) -> list[Queued[T, R]]:
        # Share what is queued among the leaders that are free to run it, so that a burst
        # (callers answered together come back together) keeps every group slot busy
        # instead of riding one large group while the others idle.
        free = max(1, self.max_inflight - self._running)
        limit = min(self.max_items, -(-len(self._queue) // free))
        group: list[Queued[T, R]] = []
        size = 0
        while self._queue and len(group) < limit:
            queued = self._queue[0]
            if queued.future.done():  # cancelled before it was taken: never written
                self._queue.popleft()
                continue
            if group and size + queued.size > self.max_bytes:
                break
            group.append(self._queue.popleft())
            size += queued.size
        return group

    async def close(self) -> None:
        """Wait for every group in flight and its follow-ups (callers get their results)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
