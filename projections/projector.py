"""The projector abstraction: a named fold of some event categories into read tables."""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar, Final, NamedTuple, Self

import asyncpg

from eventstore.protocol import EventStore
from eventstore.types import RecordedEvent
from papayya.domain.events import EVENT_TYPES, Event, from_recorded
from sql import queries

log = logging.getLogger(__name__)

SHADOW_SUFFIX: Final = "__shadow"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class Envelope(NamedTuple):
    """A stored event and its decoded domain event."""

    recorded: RecordedEvent
    event: Event


class Projector(abc.ABC):
    """Writes read-model rows for batches of events.

    A subclass sets ``name``, the ``categories`` it reads and the ``tables`` it owns, and
    implements ``handle``. It names its tables through ``sql()``/``table()`` so that the same
    class, made with ``shadow()``, builds the shadow copies a rebuild swaps in.
    """

    name: ClassVar[str]
    categories: ClassVar[frozenset[str]]
    tables: ClassVar[tuple[str, ...]]
    queries_file: ClassVar[str] = "projections.sql"

    def __init__(self, store: EventStore, *, suffix: str = "") -> None:
        for table in self.tables:
            if not _IDENTIFIER.match(table + suffix):
                raise ValueError(f"{table + suffix!r} is not a plain table name")
        self.store = store
        self.suffix = suffix
        self._sql: dict[str, str] = {}

    @property
    def is_shadow(self) -> bool:
        return self.suffix != ""

    def shadow(self) -> Self:
        """A fresh projector of the same kind that writes the rebuild's shadow tables."""
        return type(self)(self.store, suffix=SHADOW_SUFFIX)

    def table(self, name: str) -> str:
        """The physical name of one of this projector's tables."""
        if name not in self.tables:
            raise KeyError(f"{self.name} does not own a table {name!r}")
        return name + self.suffix

    def sql(self, query: str) -> str:
        """A named query of ``queries_file`` with its ``{table}`` names filled in."""
        text = self._sql.get(query)
        if text is None:
            names = {t: self.table(t) for t in self.tables}
            text = self._sql[query] = queries(self.queries_file)[query].format(**names)
        return text

    @abc.abstractmethod
    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        """Write the rows for ``batch`` on ``conn``, inside the caller's transaction.

        Events arrive in the global order, each stream's in version order and without gaps
        after what this projector has already handled. Must be deterministic in the events
        (never read the clock), so a rebuild writes what live processing wrote.
        """


def decode(events: Sequence[RecordedEvent]) -> list[Envelope]:
    """Decode a page; event types this code does not know (written by newer code) are
    skipped, as old readers must tolerate them. A known type that fails to decode raises."""
    decoded = []
    for recorded in events:
        if recorded.event_type not in EVENT_TYPES:
            log.warning(
                "skipping unknown event type %s at %s", recorded.event_type, recorded.cursor
            )
            continue
        decoded.append(Envelope(recorded, from_recorded(recorded)))
    return decoded


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
