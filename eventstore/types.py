"""Value types of the event store and the validation every implementation shares."""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import datetime
from typing import Any, Final, Literal

import msgspec

from papayya.errors import InvalidCursor, InvalidEvent, InvalidInput, PayloadTooLarge

MAX_STREAM_ID_LENGTH: Final = 200
MAX_EVENT_TYPE_LENGTH: Final = 100
MAX_EVENT_BYTES: Final = 256 * 1024
MAX_BATCH: Final = 10_000
MAX_PAYLOAD_BYTES: Final = 64 * 1024 * 1024

ANY: Final = "any"
NO_STREAM: Final = "no_stream"
ExpectedVersion = int | Literal["any", "no_stream"]

_STREAM_ID_BAD = re.compile(r"\s")
_EVENT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:\-]*$")
_encoder = msgspec.json.Encoder()


class Cursor(msgspec.Struct, frozen=True, order=True):
    """A position in the global order: (transaction id, global position), compared as a pair.

    Clients see it only as the opaque string of ``str(cursor)``.
    """

    transaction_id: int
    position: int

    def __str__(self) -> str:
        return f"c{self.transaction_id:x}_{self.position:x}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if text is None or text == "":
            return START
        if not isinstance(text, str) or not text.startswith("c") or "_" not in text:
            raise InvalidCursor()
        tx, _, pos = text[1:].partition("_")
        try:
            cursor = cls(int(tx, 16), int(pos, 16))
        except ValueError:
            raise InvalidCursor() from None
        # Both halves are bigint in Postgres (xid8 is read as one): a larger one is no cursor.
        if not (0 <= cursor.transaction_id < 2**63 and 0 <= cursor.position < 2**63):
            raise InvalidCursor()
        return cursor


START: Final = Cursor(0, 0)


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append. ``event_id`` makes the append idempotent; one is made if omitted."""

    type: str
    data: Any
    metadata: dict[str, Any] | None = None
    event_id: uuid.UUID | None = None
    schema_version: int = 1


class RecordedEvent(msgspec.Struct, frozen=True):
    """An event as stored, with its place in its stream and in the global order."""

    global_position: int
    transaction_id: int
    stream_id: str
    category: str
    stream_version: int
    event_id: uuid.UUID
    event_type: str
    schema_version: int
    data: Any
    metadata: dict[str, Any]
    recorded_at: datetime

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.transaction_id, self.global_position)


class AppendResult(msgspec.Struct, frozen=True):
    """The stream's version after the append and the cursor of its last event."""

    stream_version: int
    cursor: Cursor


class Filters(msgspec.Struct, frozen=True):
    """Which events a reader wants; ``None`` means no restriction on that attribute."""

    categories: frozenset[str] | None = None
    types: frozenset[str] | None = None
    streams: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        categories: Any = None,
        types: Any = None,
        streams: Any = None,
    ) -> Filters:
        def as_set(values: Any, what: str) -> frozenset[str] | None:
            if values is None:
                return None
            if isinstance(values, str):
                values = [values]
            names: frozenset[str] = frozenset(values)
            if not names or not all(isinstance(v, str) and v for v in names):
                raise InvalidInput(f"{what} filter must be a non-empty list of names")
            return names

        return cls(as_set(categories, "category"), as_set(types, "type"), as_set(streams, "stream"))

    @property
    def empty(self) -> bool:
        return self.categories is None and self.types is None and self.streams is None

    def matches(self, event: RecordedEvent) -> bool:
        return (
            (self.categories is None or event.category in self.categories)
            and (self.types is None or event.event_type in self.types)
            and (self.streams is None or event.stream_id in self.streams)
        )


NO_FILTERS: Final = Filters()


class ReadPage(msgspec.Struct, frozen=True):
    """A page of ``read_all``: the events and the cursor to continue after.

    ``cursor`` may be ahead of the last event: it moves past everything the read proved
    visible, including events the filters skipped.
    """

    events: list[RecordedEvent]
    cursor: Cursor


class PreparedEvent(msgspec.Struct, frozen=True):
    """A validated event, encoded once, ready for any store."""

    event_id: uuid.UUID
    type: str
    schema_version: int
    data_json: str
    metadata_json: str


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): new ids land at the right edge of the
    ``event_id`` index instead of all over it, which keeps batch appends fast as it grows."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
    return uuid.UUID(int=value)


def category_of(stream_id: str) -> str:
    """A stream's category is its id up to the first ``-`` (``run-42`` → ``run``)."""
    return stream_id.split("-", 1)[0]


def validate_stream_id(stream_id: Any) -> str:
    if not isinstance(stream_id, str) or not stream_id.strip():
        raise InvalidInput("stream_id must be a non-empty string")
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise InvalidInput(f"stream_id is longer than {MAX_STREAM_ID_LENGTH} characters")
    if _STREAM_ID_BAD.search(stream_id) or not stream_id.isprintable():
        raise InvalidInput("stream_id must not contain whitespace or control characters")
    return stream_id


def expected_to_int(expected: Any) -> int:
    """-1 for "any", 0 for "no stream", n for "at version n"."""
    if expected == ANY:
        return -1
    if expected == NO_STREAM:
        return 0
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidInput('expected_version must be a version >= 0, "any" or "no_stream"')
    return expected


def _encode(value: Any, what: str) -> str:
    try:
        raw = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidEvent(f"{what} is not JSON-serialisable: {exc}") from None
    if b"\\u0000" in raw:
        raise InvalidEvent(f"{what} contains a NUL character, which JSON in Postgres cannot hold")
    return raw.decode()


def prepare(events: Any) -> list[PreparedEvent]:
    """Validate and encode a batch; raises before anything is written."""
    if isinstance(events, NewEvent):
        events = [events]
    if not isinstance(events, list | tuple) or not events:
        raise InvalidInput("events must be a non-empty list of NewEvent")
    if len(events) > MAX_BATCH:
        raise InvalidInput(f"a batch holds at most {MAX_BATCH} events")
    prepared = []
    seen: set[uuid.UUID] = set()
    for event in events:
        if not isinstance(event, NewEvent):
            raise InvalidInput("events must be NewEvent instances")
        if not isinstance(event.type, str) or not _EVENT_TYPE.match(event.type):
            raise InvalidEvent(f"event type {event.type!r} must be a name like 'RunStarted'")
        if len(event.type) > MAX_EVENT_TYPE_LENGTH:
            raise InvalidEvent(f"event type is longer than {MAX_EVENT_TYPE_LENGTH} characters")
        if event.metadata is not None and not isinstance(event.metadata, dict):
            raise InvalidEvent("metadata must be a dict")
        if isinstance(event.schema_version, bool) or not isinstance(event.schema_version, int):
            raise InvalidEvent("schema_version must be an integer")
        data = _encode(event.data, "data")
        metadata = _encode(event.metadata or {}, "metadata")
        if len(data) + len(metadata) > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                f"event is larger than {MAX_EVENT_BYTES} bytes; store bulky content as a payload"
            )
        event_id = event.event_id or uuid7()
        if not isinstance(event_id, uuid.UUID):
            raise InvalidEvent("event_id must be a UUID")
        if event_id in seen:
            raise InvalidEvent(f"event id {event_id} appears twice in one batch")
        seen.add(event_id)
        prepared.append(PreparedEvent(event_id, event.type, event.schema_version, data, metadata))
    return prepared


def encode_summary(summary: Any) -> str:
    return _encode(summary, "summary")


def validate_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100_000:
        raise InvalidInput("limit must be an integer from 1 to 100000")
    return limit


def same_payload(prepared: PreparedEvent, stream_id: str, stored: dict[str, Any]) -> bool:
    """Is a stored event the one this prepared event describes (for idempotent retries)?"""
    decode = msgspec.json.decode
    return bool(
        stored["stream_id"] == stream_id
        and stored["event_type"] == prepared.type
        and decode(stored["data"]) == decode(prepared.data_json)
        and decode(stored["metadata"]) == decode(prepared.metadata_json)
    )
