"""Every projector of the system with its runner: run them live, catch up, rebuild, status."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec

from eventstore.postgres import SERVER_SETTINGS, PostgresEventStore
from eventstore.protocol import EventStore
from eventstore.types import Cursor, Filters
from papayya.errors import ProjectionNotFound
from projections.costs import CostsProjector
from projections.projector import Projector
from projections.rebuild import RebuildResult, rebuild
from projections.runner import PROJECTION_FAILING, PROJECTION_LAG, ProjectionRunner, Q
from projections.runs import RunsProjector

PROJECTORS: Final[tuple[type[Projector], ...]] = (RunsProjector, CostsProjector)
PROJECTION_NAMES: Final = tuple(cls.name for cls in PROJECTORS)


class Failure(msgspec.Struct, frozen=True):
    """The event a projector cannot get past, as its runner reported it, while it retries."""

    projection: str
    event_id: str | None
    cursor: str | None
    error: str | None
    since: datetime

    def describe(self, why: bool = True) -> str:
        """One line; ``why=False`` leaves the error out (it may quote the event's data)."""
        said = (
            f"projector {self.projection} cannot project event {self.event_id} "
            f"(cursor {self.cursor}) since {self.since.isoformat(timespec='seconds')}"
        )
        return f"{said}: {self.error}" if why else said


class ProjectionStatus(msgspec.Struct, frozen=True):
    """A projection's stored checkpoint and how far behind the visible events it is:
    ``lag_seconds`` is the age of the oldest event it has not processed yet (0 if none);
    ``failure`` is set while its projector cannot get past an event."""

    name: str
    cursor: str | None
    updated_at: datetime | None
    lag_seconds: float
    failure: Failure | None = None


def _failure(name: str, row: asyncpg.Record) -> Failure | None:
    if row["failing_since"] is None:
        return None
    event = row["failing_event_id"]
    return Failure(
        name,
        None if event is None else str(event),
        row["failing_cursor"],
        row["failing_error"],
        row["failing_since"],
    )


async def failing(store: PostgresEventStore) -> list[Failure]:
    """The projectors that cannot get past an event now, whichever process runs them."""
    rows = await store.pool.fetch(Q["failing_projections"])
    return [f for row in rows if (f := _failure(row["name"], row)) is not None]


async def refresh_gauges(db: asyncpg.Pool | asyncpg.Connection) -> None:
    """Set the failing and lag gauges from the checkpoint rows, for a ``/metrics`` served by
    a process that may not run the projectors itself."""
    rows = {row["name"]: row for row in await db.fetch(Q["failing_projections"])}
    now = datetime.now(UTC)
    for name in sorted({*PROJECTION_NAMES, *rows}):
        row = rows.get(name)
        PROJECTION_FAILING.labels(name).set(0 if row is None else 1)
        if row is not None:
            # The event that fails is the oldest one not processed.
            since = row["event_recorded_at"] or row["failing_since"]
            PROJECTION_LAG.labels(name).set(max(0.0, (now - since).total_seconds()))


def default_projectors(store: EventStore) -> list[Projector]:
    return [cls(store) for cls in PROJECTORS]


class Projections:
    """The runners of a set of projectors (by default every one) over one store."""

    def __init__(
        self,
        store: EventStore,
        dsn: str,
        projectors: Sequence[Projector] | None = None,
        **runner_options: Any,
    ) -> None:
        self.store = store
        self.dsn = dsn
        chosen = default_projectors(store) if projectors is None else list(projectors)
        self.runners = {p.name: ProjectionRunner(store, p, dsn, **runner_options) for p in chosen}

    def runner(self, name: str) -> ProjectionRunner:
        try:
            return self.runners[name]
        except KeyError:
            known = ", ".join(self.runners)
            raise ProjectionNotFound(f"no projection named {name!r} (known: {known})") from None

    async def run(self) -> None:
        """Run every projector live until ``stop()``."""
        await asyncio.gather(*(r.run() for r in self.runners.values()))

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()

    async def catch_up(self, until: Cursor | None = None) -> dict[str, int]:
        """Process everything visible now (and up to ``until``, waiting for it to become
        visible); events processed per projection."""
        return {name: await r.catch_up(until) for name, r in self.runners.items()}

    async def rebuild(self, name: str | None = None) -> list[RebuildResult]:
        """Rebuild one projection, or every one if ``name`` is None."""
        names = list(self.runners) if name is None else [self.runner(name).name]
        return [await rebuild(self.store, self.runners[n].projector, self.dsn) for n in names]

    async def status(self) -> list[ProjectionStatus]:
        conn = await asyncpg.connect(self.dsn, server_settings=SERVER_SETTINGS)
        try:
            return [await self._status(conn, r.projector) for r in self.runners.values()]
        finally:
            await conn.close()

    async def _status(self, conn: asyncpg.Connection, projector: Projector) -> ProjectionStatus:
        row = await conn.fetchrow(Q["checkpoint"], projector.name)
        cursor = None if row is None else Cursor.parse(row["cursor"])
        page = await self.store.read_all(
            after=cursor, limit=1, filters=Filters.of(categories=projector.categories)
        )
        lag = 0.0
        if page.events:
            lag = max(0.0, (datetime.now(UTC) - page.events[0].recorded_at).total_seconds())
        return ProjectionStatus(
            projector.name,
            None if row is None else row["cursor"],
            None if row is None else row["updated_at"],
            lag,
            None if row is None else _failure(projector.name, row),
        )
