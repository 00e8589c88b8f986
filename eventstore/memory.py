"""The in-memory twin of the Postgres store, for unit tests. Same contract, no durability."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

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
from papayya.errors import ConcurrencyError, IdempotencyConflict, InvalidInput, NotFound

_decode = msgspec.json.decode


class InMemoryEventStore:
    """Appends are atomic because they never await; a position doubles as its transaction id."""

    def __init__(self) -> None:
        self._events: list[RecordedEvent] = []
        self._keys: list[Cursor] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[object, RecordedEvent] = {}
        self._payloads: dict[str, bytes] = {}
        self._summaries: dict[str, tuple[int, Any]] = {}
        self.hub = Hub(self._read_page, self.head, poll_interval=0.5)

    async def close(self) -> None:
        await self.hub.close()

    async def append(
        self,
        stream_id: str,
        events: list[NewEvent] | NewEvent,
        expected_version: ExpectedVersion = ANY,
        summary: Any = None,
        payloads: Sequence[tuple[bytes, str]] = (),
    ) -> AppendResult:
        stream_id = validate_stream_id(stream_id)
        expected = expected_to_int(expected_version)
        prepared = prepare(events)
        summary_json = None if summary is None else encode_summary(summary)
        known = [self._by_id[e.event_id] for e in prepared if e.event_id in self._by_id]
        if known:
            stored = [
                {
                    "stream_id": ev.stream_id,
                    "event_type": ev.event_type,
                    "data": msgspec.json.encode(ev.data),
                    "metadata": msgspec.json.encode(ev.metadata),
                }
                for ev in known
            ]
            if len(known) != len(prepared) or not all(
                same_payload(p, stream_id, s) for p, s in zip(prepared, stored, strict=True)
            ):
                raise IdempotencyConflict()
            return AppendResult(max(e.stream_version for e in known), known[-1].cursor)
        stream = self._streams.get(stream_id, [])
        version = len(stream)
        if (expected == 0 and stream) or (expected > 0 and version != expected):
            raise ConcurrencyError(
                f"stream {stream_id} is at version {version}, not {expected_version}"
            )
        now = datetime.now(UTC)
        category = category_of(stream_id)
        for p in prepared:
            position = len(self._events) + 1
            version += 1
            event = RecordedEvent(
                position,
                position,
                stream_id,
                category,
                version,
                p.event_id,
                p.type,
                p.schema_version,
                _decode(p.data_json),
                _decode(p.metadata_json),
                now,
            )
            self._events.append(event)
            self._keys.append(event.cursor)
            self._by_id[p.event_id] = event
            stream.append(event)
        self._streams[stream_id] = stream
        if summary_json is not None:
            self._summaries[stream_id] = (version, _decode(summary_json))
        for content, _ in payloads:
            self._payloads.setdefault(payload_ref(content), bytes(content))
        self.hub.wake()
        return AppendResult(version, self._events[-1].cursor)

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[RecordedEvent]:
        stream_id = validate_stream_id(stream_id)
        for value in (from_version, to_version):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidInput("stream versions must be integers")
        upper = to_version if to_version is not None else 2**62
        return [
            e for e in self._streams.get(stream_id, []) if from_version <= e.stream_version <= upper
        ]

    async def read_stream_data(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[tuple[str, str, datetime]]:
        return [
            (e.event_type, msgspec.json.encode(e.data).decode(), e.recorded_at)
            for e in await self.read_stream(stream_id, from_version, to_version)
        ]

    async def summary(self, stream_id: str) -> tuple[int, Any] | None:
        return self._summaries.get(validate_stream_id(stream_id))

    async def summaries(
        self, category: str, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, int, Any]]:
        validate_limit(limit)
        found = sorted(
            (sid, v, s)
            for sid, (v, s) in self._summaries.items()
            if category_of(sid) == category and (after is None or sid > after)
        )
        return found[:limit]

    async def stream_version(self, stream_id: str) -> int:
        return len(self._streams.get(validate_stream_id(stream_id), []))

    async def read_all(
        self,
        after: Cursor | str | None = None,
        limit: int = 1000,
        filters: Filters | None = None,
    ) -> ReadPage:
        cursor = after if isinstance(after, Cursor) else Cursor.parse(after)
        return await self._read_page(cursor, validate_limit(limit), filters or NO_FILTERS)

    async def _read_page(self, after: Cursor, limit: int, filters: Filters) -> ReadPage:
        start = bisect.bisect_right(self._keys, after)
        found: list[RecordedEvent] = []
        for event in self._events[start:]:
            if filters.matches(event):
                found.append(event)
                if len(found) == limit:
                    return ReadPage(found, event.cursor)
        end = self._keys[-1] if self._keys else after
        return ReadPage(found, max(after, end))

    async def wait_visible(self, timeout: float = 10.0) -> None:
        """Appends are visible at once here."""

    async def head(self) -> Cursor:
        return self._keys[-1] if self._keys else Cursor(0, 0)

    def subscribe(
        self,
        after: Cursor | str | None = None,
        filters: Filters | None = None,
        queue_size: int = 1000,
    ) -> Subscription:
        cursor = after if isinstance(after, Cursor) else Cursor.parse(after)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise InvalidInput("queue_size must be a positive integer")
        return Subscription(self.hub, cursor, filters or NO_FILTERS, queue_size)

    async def put_payload(
        self, content: bytes, content_type: str = "application/octet-stream"
    ) -> str:
        ref = payload_ref(content)
        self._payloads.setdefault(ref, bytes(content))
        return ref

    async def get_payload(self, ref: str) -> bytes:
        check_ref(ref)
        try:
            return self._payloads[ref]
        except KeyError:
            raise NotFound(f"payload {ref} not found") from None
