"""The event store: append, read a stream, read all (fenced), subscribe, payloads."""

from eventstore.memory import InMemoryEventStore
from eventstore.postgres import PostgresEventStore
from eventstore.protocol import EventStore
from eventstore.subscriptions import Subscription
from eventstore.types import (
    ANY,
    NO_STREAM,
    AppendResult,
    Cursor,
    Filters,
    NewEvent,
    ReadPage,
    RecordedEvent,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "Cursor",
    "EventStore",
    "Filters",
    "InMemoryEventStore",
    "NewEvent",
    "PostgresEventStore",
    "ReadPage",
    "RecordedEvent",
    "Subscription",
]
