"""The embedded Postgres: started from PyPI under the data dir, reused across restarts, and a
real server to restart underneath a live subscription."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from eventstore import NewEvent, PostgresEventStore
from eventstore.embedded import EmbeddedPostgres
from eventstore.migrations import migrate
from papayya.errors import StoreUnavailable


async def append_when_back(store: PostgresEventStore, n: int) -> None:
    for _ in range(100):
        try:
            await store.append("run-1", NewEvent("Happened", {"n": n}))
            return
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the store never came back")


@pytest.mark.slow
async def test_subscription_survives_a_postgres_restart(tmp_path: Path) -> None:
    embedded = EmbeddedPostgres(tmp_path)
    dsn = await asyncio.to_thread(embedded.start)
    await migrate(dsn)
    store = await PostgresEventStore.connect(dsn, poll_interval=0.1)
    got: list[int] = []

    async def consume() -> None:
        async for event in store.subscribe():
            got.append(event.data["n"])

    consumer = asyncio.create_task(consume())
    try:
        await store.append("run-1", NewEvent("Happened", {"n": 1}))
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.05)
        assert got == [1]

        await asyncio.to_thread(embedded.stop)
        await asyncio.sleep(0.5)
        again = EmbeddedPostgres(tmp_path)
        assert await asyncio.to_thread(again.start) == dsn  # same data dir, same server
        embedded = again

        await append_when_back(store, 2)
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
        assert got == [1, 2]
        assert [e.data["n"] for e in await store.read_stream("run-1")] == [1, 2]
    finally:
        consumer.cancel()
        await store.close()
        await asyncio.to_thread(embedded.stop)
