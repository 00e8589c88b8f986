"""The Postgres event store (asyncpg)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from prometheus_client import Gauge, Histogram

from eventstore.groupcommit import GroupCommit, Queued
from eventstore.listen import listen_forever
from eventstore.payloads import check_ref, payload_ref
from eventstore.subscriptions import Hub, Subscription
from eventstore.types import (
    ANY,
    NO_FILTERS,
    AppendResult,
    Cursor,
    ExpectedVersion,
    Filters,
    NewEvent,
    PreparedEvent,
    ReadPage,
    RecordedEvent,
    category_of,
    encode_summary,
    expected_to_int,
    prepare,
    same_payload,
    validate_limit,
    validate_stream_id,
)
from papayya.errors import (
    ConcurrencyError,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from sql import queries

log = logging.getLogger(__name__)

Q: Final = queries("eventstore.sql")
CHANNEL: Final = "papayya_events"
CONCURRENCY_SQLSTATE: Final = "PY001"
NOTIFY_INTERVAL: Final = 0.002
_decode = msgspec.json.decode

APPEND_SECONDS = Histogram(
    "papayya_eventstore_append_seconds",
    "Time to append one batch to the event store.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
VISIBILITY_LAG = Gauge(
    "papayya_eventstore_visibility_lag_seconds",
    "Age of the oldest committed event that readers cannot see yet (held back by the fence).",
)

SERVER_SETTINGS: Final = {
    "application_name": "papayya",
    # A forgotten open transaction would hold the read fence back for everyone.
    "idle_in_transaction_session_timeout": "60000",
    "jit": "off",
}


def _unavailable(exc: BaseException) -> bool:
    # InternalClientError: a pooled connection that a server restart left mid-operation
    # ("cannot switch to state …"): as after a reset, the caller tries again.
    if isinstance(
        exc, OSError | asyncpg.InterfaceError | asyncpg.InternalClientError | asyncio.TimeoutError
    ):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.PostgresError) and state[:2] in {"08", "57"}


@contextlib.contextmanager
def _translate_errors() -> Any:
    try:
        yield
    except (
        TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
        OSError,
    ) as exc:  # fmt: skip
        if _unavailable(exc):
            raise StoreUnavailable(f"event store unavailable: {exc}") from exc
        raise


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query after every pool use (a fifth of an append's client time).
    Safe here: no pooled connection keeps session state (LISTEN and leader locks use their
    own connections; locks are transaction-scoped) and asyncpg still rolls back an open
    transaction on release."""


def _event(row: asyncpg.Record | Sequence[Any], offset: int = 0) -> RecordedEvent:
    r = row
    o = offset
    return RecordedEvent(
        r[o],
        int(r[o + 1]),
        r[o + 2],
        r[o + 3],
        r[o + 4],
        r[o + 5],
        r[o + 6],
        r[o + 7],
        _decode(r[o + 8]),
        {} if r[o + 9] == "{}" else _decode(r[o + 9]),
        r[o + 10],
    )


@dataclass(slots=True)
class _Append:
    """One validated append, waiting for its group."""

    stream_id: str
    category: str
    expected: int
    prepared: list[PreparedEvent]
    summary_json: str | None
    payloads: list[tuple[str, str, bytes]]  # (ref, content type, content)

    @property
    def size(self) -> int:
        events = sum(len(e.data_json) + len(e.metadata_json) for e in self.prepared)
        return events + sum(len(c) for _, _, c in self.payloads) + len(self.summary_json or "")


_Group = list[Queued[_Append, AppendResult]]


class PostgresEventStore:
    """Append-only event store on Postgres with an xid8-fenced, gapless global order.

    ``serialized=True`` takes a global advisory lock per append: slow, but its commit order
    is its position order, which makes it the oracle that the fenced reads are tested against.

    Concurrent appends commit in groups (``eventstore.groupcommit``): up to ``max_group``
    appends or ``max_group_bytes`` per transaction, ``groups_in_flight`` transactions at once.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        dsn: str | None = None,
        serialized: bool = False,
        poll_interval: float = 0.5,
        notify: bool = True,
        max_group: int = 256,
        max_group_bytes: int = 4 * 1024 * 1024,
        groups_in_flight: int = 2,
    ) -> None:
        self._pool = pool
        self._group: GroupCommit[_Append, AppendResult] = GroupCommit(
            self._commit_group,
            max_items=max_group,
            max_bytes=max_group_bytes,
            max_inflight=groups_in_flight,
        )
        self._dsn = dsn
        self.serialized = serialized
        self._notify_enabled = notify
        self._last_local_xid = 0
        self._notify_wanted = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._listen_conn: asyncpg.Connection | None = None
        self.hub = Hub(
            self._read_page,
            self.head,
            poll_interval=poll_interval,
            pending=lambda fence: fence.transaction_id <= self._last_local_xid,
            on_start=self._start_listener,
        )

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        serialized: bool = False,
        min_size: int = 2,
        max_size: int = 20,
        poll_interval: float = 0.5,
        notify: bool = True,
        groups_in_flight: int = 2,
    ) -> PostgresEventStore:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings=SERVER_SETTINGS,
                reset=_keep_session,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to the event store: {exc}") from exc
        store = cls(
            pool,
            dsn=dsn,
            serialized=serialized,
            poll_interval=poll_interval,
            notify=notify,
            groups_in_flight=groups_in_flight,
        )
        if notify and dsn:
            store._background.append(asyncio.create_task(store._notifier(), name="es-notify"))
        return store

    async def close(self) -> None:
        await self._group.close()  # appends in flight finish and their callers are answered
        await self.hub.close()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
        await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # -- append ---------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: list[NewEvent] | NewEvent,
        expected_version: ExpectedVersion = ANY,
        summary: Any = None,
        payloads: Sequence[tuple[bytes, str]] = (),
    ) -> AppendResult:
        """Append a batch to one stream in one round trip.

        ``summary``, if given, replaces the stream's summary in the same transaction, so
        ``summary()`` reads your own writes. ``payloads`` (content, content type) are stored
        in the same commit; refer to them by ``payload_ref(content)``. Raises
        ``ConcurrencyError`` (nothing written) if the stream is not at ``expected_version``.
        Retrying with the same event ids returns the first result; reusing an id for another
        event raises ``IdempotencyConflict``.
        """
        stream_id = validate_stream_id(stream_id)
        queued = _Append(
            stream_id,
            category_of(stream_id),
            expected_to_int(expected_version),
            prepare(events),
            None if summary is None else encode_summary(summary),
            [(payload_ref(content), ctype, bytes(content)) for content, ctype in payloads],
        )
        started = time.perf_counter()
        result = await self._group.submit(queued, queued.size)
        APPEND_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _commit_group(self, group: _Group) -> None:
        """Run a group in one statement (one transaction, one WAL flush), then answer each
        caller. An append that conflicted or reused an id is resolved as a single append's
        would be; one on a stream another transaction holds, or that failed otherwise, is
        appended alone. Those follow-ups run beside the next group, never holding it up."""
        columns: tuple[list[Any], ...] = tuple([] for _ in range(14))
        (streams, categories, expected, counts, ids, types, versions, data, metadata,
         summaries, payload_counts, hashes, ctypes, contents) = columns  # fmt: skip
        for queued in group:
            a = queued.item
            streams.append(a.stream_id)
            categories.append(a.category)
            expected.append(a.expected)
            counts.append(len(a.prepared))
            summaries.append(a.summary_json)
            payload_counts.append(len(a.payloads))
            for e in a.prepared:
                ids.append(e.event_id)
                types.append(e.type)
                versions.append(e.schema_version)
                data.append(e.data_json)
                metadata.append(e.metadata_json)
            for ref, ctype, content in a.payloads:
                hashes.append(ref)
                ctypes.append(ctype)
                contents.append(content)
        try:
            with _translate_errors():
                rows = await self._pool.fetch(Q["append_batch"], self.serialized, *columns)
        except Exception as exc:  # nothing of the group committed (or, if the connection
            for queued in group:  # died during COMMIT, all of it): each caller may retry
                queued.fail(exc)
            return
        xid = max((int(row[2]) for row in rows if row[0] == "ok"), default=0)
        if xid:
            self._committed(xid)
        for queued, row in zip(group, rows, strict=True):
            a = queued.item
            outcome = row[0]
            if outcome == "ok":
                queued.resolve(AppendResult(row[1], Cursor(int(row[2]), row[3])))
            elif outcome in ("conflict", "duplicate"):
                conflict = row[4] if outcome == "conflict" else None
                self._group.spawn(
                    self._settle(queued, self._resolve_retry(a.stream_id, a.prepared, conflict))
                )
            else:  # "busy" or "failed"
                self._group.spawn(self._settle(queued, self._append_alone(a)))

    @staticmethod
    async def _settle(queued: Queued[_Append, AppendResult], work: Awaitable[AppendResult]) -> None:
        try:
            queued.resolve(await work)
        except Exception as exc:
            queued.fail(exc)

    async def _append_alone(self, a: _Append) -> AppendResult:
        """One append in a transaction of its own: it waits for a stream another transaction
        holds, and any error it meets is its own."""
        try:
            with _translate_errors():
                row = await self._pool.fetchrow(
                    Q["append"],
                    a.stream_id,
                    a.category,
                    a.expected,
                    self.serialized,
                    [e.event_id for e in a.prepared],
                    [e.type for e in a.prepared],
                    [e.schema_version for e in a.prepared],
                    [e.data_json for e in a.prepared],
                    [e.metadata_json for e in a.prepared],
                    a.summary_json,
                    [ref for ref, _, _ in a.payloads] or None,
                    [ctype for _, ctype, _ in a.payloads] or None,
                    [content for _, _, content in a.payloads] or None,
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "events_event_id_key":
                raise
            return await self._resolve_retry(a.stream_id, a.prepared, None)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != CONCURRENCY_SQLSTATE:
                raise
            return await self._resolve_retry(a.stream_id, a.prepared, str(exc.args[0]))
        assert row is not None
        xid = int(row[1])
        self._committed(xid)
        return AppendResult(row[0], Cursor(xid, row[2]))

    async def append_on(
        self,
        conn: asyncpg.Connection | PoolConnectionProxy,
        stream_id: str,
        events: list[NewEvent] | NewEvent,
        expected_version: ExpectedVersion = ANY,
    ) -> None:
        """Append inside the caller's transaction on ``conn``, so rows of the caller's own
        tables commit with the events or not at all. It must be the transaction's first
        write (see ``papayya_append``); call ``committed()`` after the commit."""
        stream_id = validate_stream_id(stream_id)
        prepared = prepare(events)
        try:
            with _translate_errors():
                await conn.fetchrow(
                    Q["append"], stream_id, category_of(stream_id),
                    expected_to_int(expected_version), self.serialized,
                    [e.event_id for e in prepared], [e.type for e in prepared],
                    [e.schema_version for e in prepared], [e.data_json for e in prepared],
                    [e.metadata_json for e in prepared], None, None, None, None,
                )  # fmt: skip
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) == CONCURRENCY_SQLSTATE:
                raise ConcurrencyError(f"{stream_id} is not at {expected_version}") from None
            raise

    def committed(self) -> None:
        """Wake local subscribers after a transaction that used ``append_on`` committed."""
        self.hub.wake()
        self._notify_wanted.set()

    def _committed(self, xid: int) -> None:
        if xid > self._last_local_xid:
            self._last_local_xid = xid
        self.hub.wake()
        self._notify_wanted.set()

    async def _resolve_retry(
        self, stream_id: str, prepared: list[PreparedEvent], conflict: str | None
    ) -> AppendResult:
        """After a failed append: is it a retry of one that already committed?"""
        with _translate_errors():
            rows = await self._pool.fetch(Q["events_by_id"], [e.event_id for e in prepared])
        if not rows:
            raise ConcurrencyError(conflict or f"stream {stream_id} changed concurrently")
        stored = {row["event_id"]: dict(row) for row in rows}
        if len(stored) != len(prepared) or not all(
            e.event_id in stored and same_payload(e, stream_id, stored[e.event_id])
            for e in prepared
        ):
            raise IdempotencyConflict()
        last = stored[prepared[-1].event_id]
        versions = [row["stream_version"] for row in rows]
        return AppendResult(
            max(versions), Cursor(int(last["transaction_id"]), last["global_position"])
        )

    # -- reads ----------------------------------------------------------------------------

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[RecordedEvent]:
        stream_id = validate_stream_id(stream_id)
        for value in (from_version, to_version):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidInput("stream versions must be integers")
        upper = to_version if to_version is not None else 2**62
        with _translate_errors():
            rows = await self._pool.fetch(
                Q["read_stream"], stream_id, max(from_version, 1), upper, 1_000_000
            )
        return [_event(row) for row in rows]

    async def read_stream_data(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[tuple[str, str, datetime]]:
        """``(event_type, data JSON, recorded_at)`` of a stream's events, undecoded: the
        fast path for callers that decode straight into their own types."""
        stream_id = validate_stream_id(stream_id)
        for value in (from_version, to_version):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidInput("stream versions must be integers")
        upper = to_version if to_version is not None else 2**62
        with _translate_errors():
            rows = await self._pool.fetch(Q["read_stream_data"], stream_id, from_version, upper)
        return [(row[0], row[1], row[2]) for row in rows]

    async def summary(self, stream_id: str) -> tuple[int, Any] | None:
        """The stream's latest summary and the version it reflects, or None."""
        stream_id = validate_stream_id(stream_id)
        with _translate_errors():
            row = await self._pool.fetchrow(Q["summary"], stream_id)
        return None if row is None else (row[0], _decode(row[1]))

    async def summaries(
        self, category: str, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, int, Any]]:
        """Summaries of a category's streams, by stream id, for listing."""
        with _translate_errors():
            rows = await self._pool.fetch(Q["summaries"], category, after, validate_limit(limit))
        return [(row[0], row[1], _decode(row[2])) for row in rows]

    async def stream_version(self, stream_id: str) -> int:
        stream_id = validate_stream_id(stream_id)
        with _translate_errors():
            version = await self._pool.fetchval(Q["stream_version"], stream_id)
        return int(version or 0)

    async def read_all(
        self,
        after: Cursor | str | None = None,
        limit: int = 1000,
        filters: Filters | None = None,
    ) -> ReadPage:
        """Events after ``after`` in the global order, never skipping one that commits late."""
        cursor = after if isinstance(after, Cursor) else Cursor.parse(after)
        return await self._read_page(cursor, validate_limit(limit), filters or NO_FILTERS)

    async def _read_page(self, after: Cursor, limit: int, filters: Filters) -> ReadPage:
        def as_list(values: frozenset[str] | None) -> list[str] | None:
            return None if values is None else sorted(values)

        with _translate_errors():
            if filters.empty:
                rows = await self._pool.fetch(
                    Q["read_all"], str(after.transaction_id), after.position, limit
                )
            else:
                rows = await self._pool.fetch(
                    Q["read_all_filtered"],
                    str(after.transaction_id),
                    after.position,
                    limit,
                    as_list(filters.categories),
                    as_list(filters.types),
                    as_list(filters.streams),
                )
        fence = int(rows[0][0])
        if rows[0][1] is None:  # nothing visible after the cursor
            return ReadPage([], max(after, Cursor(fence, 0)))
        events = [_event(row, 1) for row in rows]
        if len(events) < limit:
            # Everything below the fence has been read: move past it even if filtered out.
            return ReadPage(events, max(events[-1].cursor, Cursor(fence, 0)))
        return ReadPage(events, events[-1].cursor)

    async def head(self) -> Cursor:
        """A cursor after every event visible now."""
        with _translate_errors():
            fence = await self._pool.fetchval(Q["fence"])
        return Cursor(int(fence), 0)

    async def wait_visible(self, timeout: float = 10.0) -> None:
        """Wait until every event this store appended is visible to ``read_all`` (the fence
        waits for every older transaction on the server, not only ours)."""
        async with asyncio.timeout(timeout):
            while (await self.head()).transaction_id <= self._last_local_xid:
                await asyncio.sleep(0.005)

    async def visibility_lag(self) -> float:
        """Seconds the oldest committed-but-fenced event has waited; also sets the gauge."""
        with _translate_errors():
            lag = float(await self._pool.fetchval(Q["visibility_lag"]))
        VISIBILITY_LAG.set(lag)
        return lag

    def subscribe(
        self,
        after: Cursor | str | None = None,
        filters: Filters | None = None,
        queue_size: int = 1000,
    ) -> Subscription:
        """Catch up from ``after`` (default: the start), then follow live appends."""
        cursor = after if isinstance(after, Cursor) else Cursor.parse(after)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InvalidInput("queue_size must be a positive integer")
        return Subscription(self.hub, cursor, filters or NO_FILTERS, queue_size)

    # -- payloads -------------------------------------------------------------------------

    async def put_payload(
        self, content: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        ref = payload_ref(content)
        with _translate_errors():
            await self._pool.execute(
                Q["put_payload"], ref, len(content), content_type, bytes(content)
            )
        return ref

    async def get_payload(self, ref: str) -> bytes:
        check_ref(ref)
        with _translate_errors():
            content = await self._pool.fetchval(Q["get_payload"], ref)
        if content is None:
            raise NotFound(f"payload {ref} not found")
        return bytes(content)

    # -- wake-ups -------------------------------------------------------------------------

    async def _notifier(self) -> None:
        """Send one NOTIFY per burst of local commits, outside any append transaction, on a
        connection of its own (no pool round trips on the append path)."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await self._notify_wanted.wait()
                self._notify_wanted.clear()
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(self._dsn, server_settings=SERVER_SETTINGS)
                    await conn.execute(Q["notify"])
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.debug("NOTIFY failed (polling covers it): %s", exc)
                    conn = None
                    await asyncio.sleep(0.1)
                await asyncio.sleep(NOTIFY_INTERVAL)  # at most one NOTIFY per interval
        finally:
            if conn is not None:
                conn.terminate()

    def _start_listener(self) -> None:
        if self._dsn is not None and self._notify_enabled:
            self._background.append(asyncio.create_task(self._listen(), name="es-listen"))

    async def _listen(self) -> None:
        """Keep a LISTEN connection open; if it dies, reconnect while polling carries on."""
        assert self._dsn is not None

        async def connected(conn: asyncpg.Connection) -> None:
            self._listen_conn = conn
            self.hub.wake()  # anything committed while we were not listening

        await listen_forever(
            self._dsn, CHANNEL, lambda _: self.hub.wake(), connected,
            server_settings=SERVER_SETTINGS,
        )  # fmt: skip

    async def listener_backend_pid(self) -> int | None:
        """The LISTEN connection's server pid (tests kill it to prove polling takes over)."""
        conn = self._listen_conn
        return None if conn is None or conn.is_closed() else conn.get_server_pid()
