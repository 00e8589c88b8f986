"""Read-model repositories: one object per read model (agents, deployments, schedules,
webhooks, projects and their keys) owns its named queries (``sql/*.sql``) and builds its
results with ``from_row``, so routes and workers never touch the pool themselves.

Each is created once per process from the Postgres event store (its pool, and ``append_on``
where a row and its events commit together) and held under an ``AppKey``. A method that must
join the caller's transaction takes its connection (``conn``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from eventstore.postgres import PostgresEventStore

# A pool, or a connection to run inside the caller's transaction.
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy


class Repository:
    """The Postgres store a repository reads and writes: its pool for queries, and
    ``append_on`` for rows whose events commit in the same transaction."""

    def __init__(self, store: PostgresEventStore) -> None:
        self.store = store

    @property
    def pool(self) -> asyncpg.Pool:
        return self.store.pool

    @asynccontextmanager
    async def transaction(self, *, appends: bool = False) -> AsyncIterator[Conn]:
        """A connection in a transaction. With ``appends`` (it calls ``append_on``), local
        subscribers are woken once it commits; other processes find the events by polling."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn
        if appends:
            self.store.committed()
