"""The projector runner: checkpointed batches, one leader per projector, live wake-ups.

Each batch's rows and its checkpoint commit in one transaction, so every event takes effect
exactly once even in additive read models. Leadership is a session advisory lock, and the
batches are written on the very connection that holds it: a runner whose session died cannot
write anything, whatever it still believes about being the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import asyncpg
from prometheus_client import Gauge

from eventstore.postgres import SERVER_SETTINGS
from eventstore.protocol import EventStore
from eventstore.types import START, Cursor, Filters, ReadPage, RecordedEvent
from projections.projector import Projector, decode
from sql import queries

log = logging.getLogger(__name__)

Q: Final = queries("projections.sql")
PROJECTION_LAG = Gauge(
    "papayya_projection_lag_seconds",
    "Age of the oldest event a projector has not processed while it is behind or failing; "
    "0 when caught up.",
    ["projection"],
)
PROJECTION_FAILING = Gauge(
    "papayya_projection_failing",
    "1 while a projector cannot get past an event (papayya projections status names it).",
    ["projection"],
)

# Projection commits need not wait for the WAL flush: a commit lost in a server crash takes
# its checkpoint with it, so the events are projected again. Rows never outlive their checkpoint.
PROJECTOR_SETTINGS: Final = {**SERVER_SETTINGS, "synchronous_commit": "off"}

VISIBILITY_POLL: Final = 0.005
ERROR_TEXT: Final = 2000  # of a failure's message kept in the checkpoint row

AfterCommit = Callable[[Sequence[RecordedEvent]], None]
# Failures of the connection, not of the events: no event is to blame for them.
_OUTAGES: Final = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)


class CheckpointMoved(Exception):
    """The stored checkpoint is not where this runner left it: a rebuild swapped tables."""


class ProjectionRunner:
    """Feeds one projector from the event store: ``catch_up()`` for tests and the CLI,
    ``run()`` to follow live appends until ``stop()``."""

    def __init__(
        self,
        store: EventStore,
        projector: Projector,
        dsn: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retry_interval: float = 1.0,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.store = store
        self.projector = projector
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self.after_commit = after_commit
        self.processed = 0  # events this runner has committed, for tests and benchmarks
        self.failures = 0  # batches that did not commit, for tests
        self._dsn = dsn
        self._filters = Filters.of(categories=projector.categories)
        self._checkpoint = START  # the stored checkpoint, as far as this runner knows
        self._position = START  # where to read next; may be past filtered-out events
        self._conn: asyncpg.Connection | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        # After a batch failed: read one event at a time up to here, so that the event that
        # fails is known (and reported), or the failure is found to have been passing.
        self._suspect: Cursor | None = None
        self._reported: object = None  # the event (or error) last logged, so it is logged once
        self._last_failure: BaseException | None = None  # ... and the exception that named it
        self._named: object = None

    @property
    def name(self) -> str:
        return self.projector.name

    @property
    def is_leader(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def lock_backend_pid(self) -> int | None:
        """The server pid of the session holding the leadership lock, if this runner leads."""
        return self._conn.get_server_pid() if self.is_leader and self._conn else None

    def stop(self) -> None:
        """Ask ``run()`` to return after the batch in flight (never in the middle of one)."""
        self._stopping.set()
        self._wake.set()

    async def catch_up(self, until: Cursor | None = None) -> int:
        """Lead (waiting while another runner does), process every event visible now, step
        down, and return how many events were processed. Not while ``run()`` is running.

        With ``until`` (an append's cursor), also wait until that event is visible and
        processed: the read fence is server-wide, so an open transaction of any session can
        keep a committed append hidden for a while."""
        conn = await self._acquire()
        if conn is None:
            return 0
        try:
            total = await self._drain(conn)
            while until is not None and self._position < until and not self._stopping.is_set():
                await asyncio.sleep(VISIBILITY_POLL)
                total += await self._drain(conn)
            return total
        finally:
            await self._release(conn)

    async def run(self) -> None:
        """Process live events as the leader, or wait to become it, until ``stop()``.
        Database errors and a lost leadership session are logged and retried."""
        try:
            start: Cursor | None = await self.store.head()
        except Exception:  # the doorbell will find the head once the store is back
            start = None
        bell = asyncio.create_task(self._doorbell(start), name=f"doorbell-{self.name}")
        try:
            while not self._stopping.is_set():
                try:
                    conn = await self._acquire()
                    if conn is None:
                        break
                    try:
                        await self._lead(conn)
                    finally:
                        await self._release(conn)
                except Exception as exc:
                    # Retried every retry_interval, but said once: a log line per second for
                    # ever buries the one that matters.
                    key = (
                        self._named if exc is self._last_failure else f"{type(exc).__name__}: {exc}"
                    )
                    if key != self._reported:
                        self._reported = key
                        log.warning(
                            "projector %s stepped down: %s; retrying every %ss",
                            self.name, exc, self.retry_interval, exc_info=True,
                        )  # fmt: skip
                    await self._pause(self.retry_interval)
        finally:
            bell.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bell

    async def _lead(self, conn: asyncpg.Connection) -> None:
        while not self._stopping.is_set():
            if conn.is_closed():
                raise ConnectionError("the leadership session was lost")
            self._wake.clear()
            await self._drain(conn)
            # The doorbell wakes us on new events; the timeout is the safety net.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but return at once on ``stop()``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # -- leadership -----------------------------------------------------------------------

    async def _acquire(self) -> asyncpg.Connection | None:
        """A connection holding this projector's lock, or None if stopped while waiting."""
        conn = await asyncpg.connect(self._dsn, server_settings=PROJECTOR_SETTINGS)
        try:
            while not await conn.fetchval(Q["try_lead"], self.name):
                await self._pause(self.retry_interval)
                if self._stopping.is_set():
                    await conn.close()
                    return None
            await conn.execute(Q["ensure_checkpoint"], self.name, str(START))
            stored = await conn.fetchval(Q["checkpoint"], self.name)
        except BaseException:
            conn.terminate()
            raise
        self._checkpoint = self._position = Cursor.parse(stored)
        self._conn = conn
        conn.add_termination_listener(lambda _conn: self._wake.set())  # notice it at once
        return conn

    async def _release(self, conn: asyncpg.Connection) -> None:
        """Step down: closing the session releases its advisory lock."""
        self._conn = None
        if self._suspect is None:  # a failing projector's lag keeps growing
            PROJECTION_LAG.labels(self.name).set(0)
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()

    # -- batches --------------------------------------------------------------------------

    async def _drain(self, conn: asyncpg.Connection) -> int:
        """Process pages until a short one: then everything visible at the start is done."""
        total = 0
        while not self._stopping.is_set():
            limit = self.batch_size if self._suspect is None else 1
            page = await self.store.read_all(
                after=self._position, limit=limit, filters=self._filters
            )
            if page.events:
                try:
                    committed = await self._commit(conn, page)
                except Exception as exc:
                    await self._failed(conn, page, exc)
                    raise
                if not committed:
                    continue  # the checkpoint moved under us: read again from there
                total += len(page.events)
            self._position = max(self._position, page.cursor)
            if self._suspect is not None and self._position >= self._suspect:
                self._recovered()
            self._report_lag(page, limit)
            if len(page.events) < limit:
                break
        if self._suspect is None:
            self._reported = None  # healthy again: the next failure is news
        return total

    async def _failed(self, conn: asyncpg.Connection, page: ReadPage, exc: Exception) -> None:
        """A batch did not commit: make it visible (the lag grows from its first event, the
        failing gauge is 1) and, once the batch is down to one event, name that event, in
        the log once and in its checkpoint row for ``/readyz`` and ``projections status``."""
        self.failures += 1
        first = page.events[0]
        lag = max(0.0, (datetime.now(UTC) - first.recorded_at).total_seconds())
        PROJECTION_LAG.labels(self.name).set(lag)
        if conn.is_closed() or isinstance(exc, _OUTAGES):
            return  # the database went away, not the events: run() retries and logs it
        self._suspect = max(self._suspect or START, page.cursor)
        PROJECTION_FAILING.labels(self.name).set(1)
        if len(page.events) > 1:
            return  # the retry reads one event at a time and finds which
        self._last_failure, self._named = exc, first.event_id
        error = f"{type(exc).__name__}: {exc}"[:ERROR_TEXT]
        if self._reported != first.event_id:
            self._reported = first.event_id
            log.error(
                "projector %s cannot project event %s (%s, stream %s, cursor %s): %s; "
                "retrying every %ss until it can",
                self.name, first.event_id, first.event_type, first.stream_id, first.cursor,
                error, self.retry_interval, exc_info=exc,
            )  # fmt: skip
        try:
            await conn.execute(
                Q["report_failure"], self.name, first.event_id, str(first.cursor), error
            )
        except Exception as report_exc:  # the database may be what failed
            log.debug("projector %s cannot record its failure: %s", self.name, report_exc)

    def _recovered(self) -> None:
        if self._reported is not None:
            log.warning("projector %s is past the events it could not project", self.name)
        self._suspect = None
        self._reported = self._last_failure = self._named = None
        PROJECTION_FAILING.labels(self.name).set(0)

    async def _commit(self, conn: asyncpg.Connection, page: ReadPage) -> bool:
        """Write one page and its checkpoint in one transaction; False if a rebuild moved
        the checkpoint since this runner read it (nothing is written then)."""
        batch = decode(page.events)
        try:
            async with conn.transaction():
                # First, so that a rebuild's swap and this batch wait for each other.
                advanced = await conn.fetchval(
                    Q["advance_checkpoint"], self.name, str(self._checkpoint), str(page.cursor)
                )
                if not advanced:
                    raise CheckpointMoved()
                if batch:
                    await self.projector.handle(conn, batch)
        except CheckpointMoved:
            stored = await conn.fetchval(Q["checkpoint"], self.name)
            if stored is None:
                raise RuntimeError(f"the checkpoint row of {self.name} disappeared") from None
            log.info("projector %s: checkpoint moved to %s (rebuild)", self.name, stored)
            self._checkpoint = self._position = Cursor.parse(stored)
            return False
        self._checkpoint = self._position = page.cursor
        self.processed += len(page.events)
        if self.after_commit is not None:
            self.after_commit(page.events)
        return True

    def _report_lag(self, page: ReadPage, limit: int) -> None:
        behind = len(page.events) >= limit
        lag = 0.0
        if behind:
            lag = max(0.0, (datetime.now(UTC) - page.events[-1].recorded_at).total_seconds())
        PROJECTION_LAG.labels(self.name).set(lag)

    async def _doorbell(self, after: Cursor | None) -> None:
        """Set the wake flag whenever an event of our categories commits. The subscription
        is only a wake-up: batches are read with ``read_all``, one code path for catch-up
        and live, whose cursor also moves past events the filters skip. It starts at the
        head taken before the first batch, so no event falls between the two."""
        while True:
            try:
                if after is None:
                    after = await self.store.head()
                async with self.store.subscribe(after=after, filters=self._filters) as events:
                    async for _ in events:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll keeps the projector going meanwhile
                log.debug("projector %s doorbell failed: %s", self.name, exc)
                after = None
                await asyncio.sleep(self.retry_interval)
