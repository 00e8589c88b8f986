"""The event store port. ``PostgresEventStore`` and ``InMemoryEventStore`` both implement it and
pass the same contract tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from eventstore.subscriptions import Subscription
from eventstore.types import (
    AppendResult,
    Cursor,
    ExpectedVersion,
    Filters,
    NewEvent,
    ReadPage,
    RecordedEvent,
)


class EventStore(Protocol):
    async def append(
        self,
        stream_id: str,
        events: list[NewEvent] | NewEvent,
        expected_version: ExpectedVersion = "any",
        summary: Any = None,
        payloads: Sequence[tuple[bytes, str]] = (),
    ) -> AppendResult: ...

    async def read_stream_data(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[tuple[str, str, datetime]]: ...

    async def summary(self, stream_id: str) -> tuple[int, Any] | None: ...

    async def summaries(
        self, category: str, after: str | None = None, limit: int = 100
    ) -> list[tuple[str, int, Any]]: ...

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[RecordedEvent]: ...

    async def stream_version(self, stream_id: str) -> int: ...

    async def read_all(
        self,
        after: Cursor | str | None = None,
        limit: int = 1000,
        filters: Filters | None = None,
    ) -> ReadPage: ...

    async def head(self) -> Cursor: ...

    async def wait_visible(self, timeout: float = 10.0) -> None: ...

    def subscribe(
        self,
        after: Cursor | str | None = None,
        filters: Filters | None = None,
        queue_size: int = 1000,
    ) -> Subscription: ...

    async def put_payload(
        self, content: bytes, content_type: str = "application/octet-stream"
    ) -> str: ...

    async def get_payload(self, ref: str) -> bytes: ...

    async def close(self) -> None: ...
