"""Rebuild a projection from the first event into shadow tables, then swap them in.

Live runners keep serving the old tables meanwhile. The swap locks the projector's
checkpoint row, which each of their batch transactions locks first: they pause for the swap,
then find the checkpoint moved to the shadow's cursor and carry on from there. (The leadership
lock cannot serve here: a live leader holds it for as long as it lives.)
"""

from __future__ import annotations

import contextlib
import re
from typing import Final

import asyncpg
import msgspec

from eventstore.protocol import EventStore
from eventstore.types import START, Cursor, Filters
from papayya.errors import RebuildInProgress
from projections.projector import SHADOW_SUFFIX, Projector, decode
from projections.runner import PROJECTOR_SETTINGS
from sql import queries

Q: Final = queries("projections.sql")
SWAP_LOCK_TIMEOUT: Final = "5s"
SWAP_ATTEMPTS: Final = 5
_INDEX_NAME = re.compile(r"INDEX \S+ ON ")


class RebuildResult(msgspec.Struct, frozen=True):
    """What a rebuild replayed and the checkpoint it left the projection at."""

    name: str
    events: int
    cursor: str


async def rebuild(
    store: EventStore, projector: Projector, dsn: str, *, batch_size: int = 2000
) -> RebuildResult:
    """Replay every event of the projector's categories into shadow copies of its tables and
    swap them in, in one transaction. ``RebuildInProgress`` if another rebuild of it runs."""
    conn = await asyncpg.connect(dsn, server_settings=PROJECTOR_SETTINGS)
    try:
        if not await conn.fetchval(Q["try_rebuild_lock"], projector.name):
            raise RebuildInProgress(f"a rebuild of {projector.name} is already running")
        try:
            await _create_shadows(conn, projector)
            events, cursor = await _replay(store, projector.shadow(), conn, batch_size)
            await _swap(conn, projector, cursor)
        except BaseException:
            with contextlib.suppress(Exception):
                await _drop_shadows(conn, projector)
            raise
    finally:
        await conn.close()  # also releases the rebuild lock
    return RebuildResult(projector.name, events, str(cursor))


def _shadow(table: str) -> str:
    return table + SHADOW_SUFFIX


async def _create_shadows(conn: asyncpg.Connection, projector: Projector) -> None:
    async with conn.transaction():
        for table in projector.tables:
            await conn.execute(Q["create_shadow"].format(table=table, shadow=_shadow(table)))


async def _drop_shadows(conn: asyncpg.Connection, projector: Projector) -> None:
    for table in projector.tables:
        await conn.execute(Q["drop_shadow"].format(shadow=_shadow(table)))


async def _replay(
    store: EventStore, shadow: Projector, conn: asyncpg.Connection, batch_size: int
) -> tuple[int, Cursor]:
    """Fold everything visible now into the shadow tables; one transaction per page keeps
    the transactions short (an open one would hold back every reader's fence)."""
    filters = Filters.of(categories=shadow.categories)
    cursor, total = START, 0
    while True:
        page = await store.read_all(after=cursor, limit=batch_size, filters=filters)
        batch = decode(page.events)
        if batch:
            async with conn.transaction():
                await shadow.handle(conn, batch)
        total += len(page.events)
        cursor = max(cursor, page.cursor)
        if len(page.events) < batch_size:
            return total, cursor


async def _swap(conn: asyncpg.Connection, projector: Projector, cursor: Cursor) -> None:
    for table in projector.tables:
        await conn.execute(Q["analyze_shadow"].format(shadow=_shadow(table)))
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            await _swap_once(conn, projector, cursor)
            return
        except asyncpg.LockNotAvailableError:
            # A long reader holds a table: give up the queue we were blocking, then retry.
            if attempt == SWAP_ATTEMPTS:
                raise


async def _swap_once(conn: asyncpg.Connection, projector: Projector, cursor: Cursor) -> None:
    async with conn.transaction():
        # Waiting for ACCESS EXCLUSIVE queues every reader behind us, so do not wait long.
        await conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
        await conn.execute(Q["ensure_checkpoint"], projector.name, str(START))
        await conn.fetchval(Q["lock_checkpoint"], projector.name)  # live runners wait here
        for table in projector.tables:
            await _swap_table(conn, table)
        await conn.execute(Q["save_checkpoint"], projector.name, str(cursor))


async def _swap_table(conn: asyncpg.Connection, table: str) -> None:
    """Replace ``table`` by its shadow, giving the shadow's indexes and constraints the names
    the live ones had (LIKE makes up its own), so later migrations can name them."""
    wanted = await _names(conn, table)
    await conn.execute(Q["swap_table"].format(table=table, shadow=_shadow(table)))
    for key, current in (await _names(conn, table)).items():
        name = wanted.get(key)
        if name is None or name == current:
            continue
        if key.startswith("i:"):
            await conn.execute(Q["rename_index"].format(old=current, new=name))
        else:
            await conn.execute(Q["rename_constraint"].format(table=table, old=current, new=name))


async def _names(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    """Names of the table's indexes and other constraints, keyed by their definition."""
    names = {
        "i:" + _INDEX_NAME.sub("INDEX ON ", row["definition"]): row["name"]
        for row in await conn.fetch(Q["indexes"], table)
    }
    for row in await conn.fetch(Q["constraints"], table):
        names["c:" + row["definition"]] = row["name"]
    return names
