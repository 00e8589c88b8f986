"""Properties only the Postgres store has to prove: concurrency, the fence, durability."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest

from eventstore import AppendResult, NewEvent, PostgresEventStore, RecordedEvent
from eventstore.payloads import payload_ref
from papayya.errors import ConcurrencyError, StoreUnavailable


def ev(**data: object) -> NewEvent:
    return NewEvent("Happened", dict(data))


async def eventually(condition: Callable[[], bool], timeout: float = 10) -> None:
    """Wait for ``condition``: the fence also waits for unrelated transactions on the server."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def collect(sub_iter: object, count: int) -> list[RecordedEvent]:
    got: list[RecordedEvent] = []

    async def run() -> None:
        async for event in sub_iter:  # type: ignore[attr-defined]
            got.append(event)
            if len(got) == count:
                return

    await asyncio.wait_for(run(), 10)
    return got


async def test_concurrent_appends_at_same_version_one_wins(pg_store: PostgresEventStore) -> None:
    await pg_store.append("run-1", ev(n=0), "no_stream")
    results = await asyncio.gather(
        *(pg_store.append("run-1", [ev(n=i), ev(n=i)], 1) for i in range(20)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(winners) == 1 and len(losers) == 19
    events = await pg_store.read_stream("run-1")
    assert [e.stream_version for e in events] == [1, 2, 3]


async def test_concurrent_new_stream_creation_one_wins(pg_store: PostgresEventStore) -> None:
    results = await asyncio.gather(
        *(pg_store.append("run-new", ev(n=i), "no_stream") for i in range(20)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert await pg_store.stream_version("run-new") == 1


async def test_concurrent_any_appends_have_no_version_gaps(pg_store: PostgresEventStore) -> None:
    await asyncio.gather(*(pg_store.append("run-1", [ev(n=i), ev(n=i)]) for i in range(20)))
    versions = [e.stream_version for e in await pg_store.read_stream("run-1")]
    assert versions == list(range(1, 41))


async def test_concurrent_identical_retries_are_idempotent(pg_store: PostgresEventStore) -> None:
    batch = [NewEvent("A", {"i": i}, event_id=uuid.uuid4()) for i in range(3)]
    results = await asyncio.gather(*(pg_store.append("run-1", batch) for _ in range(10)))
    assert len(set(results)) == 1
    assert await pg_store.stream_version("run-1") == 3


async def test_events_are_immutable_in_the_database(dsn: str, pg_store: PostgresEventStore) -> None:
    await pg_store.append("run-1", ev(n=1))
    conn = await asyncpg.connect(dsn)
    try:
        for statement in (
            "UPDATE events SET data = '{}'",
            "DELETE FROM events",
            "TRUNCATE events",
        ):
            with pytest.raises(asyncpg.PostgresError, match="immutable"):
                await conn.execute(statement)
    finally:
        await conn.close()
    assert len(await pg_store.read_stream("run-1")) == 1


async def test_held_open_transaction_holds_readers_back(
    dsn: str, pg_store: PostgresEventStore
) -> None:
    """A slow writer's event is never skipped, however late it commits."""
    await pg_store.append("run-0", ev(n=0))
    sub = pg_store.subscribe()
    got: list[int] = []

    async def consume() -> None:
        async for event in sub:
            got.append(event.data["n"])

    consumer = asyncio.create_task(consume())
    slow = await asyncpg.connect(dsn)
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.fetch(
            "SELECT * FROM papayya_append('run-slow', 'run', -1, false, $1::uuid[], "
            "ARRAY['Happened'], ARRAY[1], ARRAY['{\"n\": 1}'::jsonb], ARRAY['{}'::jsonb])",
            [uuid.uuid4()],
        )
        for n in (2, 3):
            await pg_store.append(f"run-{n}", ev(n=n))
        await asyncio.sleep(0.5)
        page = await pg_store.read_all()
        assert [e.data["n"] for e in page.events] == [0]
        assert got == [0]
        assert await pg_store.visibility_lag() > 0
        await tx.commit()
        await eventually(lambda: got == [0, 1, 2, 3])
        await pg_store.wait_visible()
        assert [e.data["n"] for e in (await pg_store.read_all()).events] == [0, 1, 2, 3]

        # A rolled-back writer holds readers only while it is open.
        tx = slow.transaction()
        await tx.start()
        await slow.fetch(
            "SELECT * FROM papayya_append('run-gone', 'run', -1, false, $1::uuid[], "
            "ARRAY['Happened'], ARRAY[1], ARRAY['{\"n\": 99}'::jsonb], ARRAY['{}'::jsonb])",
            [uuid.uuid4()],
        )
        await pg_store.append("run-4", ev(n=4))
        await asyncio.sleep(0.3)
        assert got == [0, 1, 2, 3]
        await tx.rollback()
        await eventually(lambda: got == [0, 1, 2, 3, 4])
    finally:
        await slow.close()
        consumer.cancel()
        await sub.close()


async def test_delivery_continues_by_polling_when_listen_connection_dies(
    dsn: str, admin_dsn: str
) -> None:
    # A writer in another process is seen only through NOTIFY or polling.
    reader = await PostgresEventStore.connect(dsn, poll_interval=0.2)
    writer = await PostgresEventStore.connect(dsn)
    try:
        sub = reader.subscribe()
        first = asyncio.create_task(collect(sub, 1))
        await asyncio.sleep(0.2)
        pid = await reader.listener_backend_pid()
        assert pid is not None
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await admin.close()
        await writer.append("run-1", ev(n=1))
        assert [e.data["n"] for e in await first] == [1]
        rest = asyncio.create_task(collect(sub, 2))
        await writer.append("run-1", [ev(n=2), ev(n=3)])
        assert [e.data["n"] for e in await rest] == [2, 3]
        await sub.close()
    finally:
        await reader.close()
        await writer.close()


async def test_slow_subscriber_has_bounded_memory_and_loses_nothing(
    pg_store: PostgresEventStore,
) -> None:
    sub = pg_store.subscribe(queue_size=10)
    got: list[int] = []

    async def slow_consumer() -> None:
        async for event in sub:
            got.append(event.data["n"])
            if len(got) % 50 == 0:
                await asyncio.sleep(0.05)  # falls behind the writer
            assert sub.queue.qsize() <= 10
            if len(got) == 500:
                return

    task = asyncio.create_task(slow_consumer())
    await asyncio.sleep(0.1)
    for start in range(0, 500, 25):
        await pg_store.append("run-1", [ev(n=n) for n in range(start, start + 25)])
    await asyncio.wait_for(task, 20)
    assert got == list(range(500))
    await sub.close()


async def test_serialized_mode_orders_by_position(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn, serialized=True)
    try:
        await asyncio.gather(*(store.append(f"run-{i % 4}", ev(n=i)) for i in range(40)))
        await store.wait_visible()
        events = (await store.read_all()).events
        positions = [e.global_position for e in events]
        assert positions == sorted(positions) and len(events) == 40
    finally:
        await store.close()


async def test_appends_issued_together_commit_together(pg_store: PostgresEventStore) -> None:
    """Group commit: concurrent appends to different streams share a transaction (and so one
    WAL flush) instead of one each."""
    results = await asyncio.gather(*(pg_store.append(f"run-{i}", ev(n=i)) for i in range(20)))
    assert len({r.cursor.transaction_id for r in results}) < len(results)
    await pg_store.wait_visible()
    events = (await pg_store.read_all()).events
    assert sorted(e.data["n"] for e in events) == list(range(20))
    assert {e.cursor for e in events} == {r.cursor for r in results}


async def test_a_held_stream_does_not_hold_back_other_streams(
    dsn: str, pg_store: PostgresEventStore
) -> None:
    """A transaction that holds one stream (``append_on``, left open) delays only the appends
    to that stream; and the late one still follows it in the global order."""
    holder = await asyncpg.connect(dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await pg_store.append_on(holder, "run-held", ev(n=0), "no_stream")
        held = asyncio.create_task(pg_store.append("run-held", ev(n=1), "any"))
        others = [asyncio.create_task(pg_store.append(f"run-{i}", ev(n=i))) for i in range(10)]
        done = await asyncio.wait_for(asyncio.gather(*others), 20)
        assert [r.stream_version for r in done] == [1] * 10
        assert not held.done()
        await tx.commit()
        assert (await asyncio.wait_for(held, 20)).stream_version == 2
    finally:
        await holder.close()
    await pg_store.wait_visible()
    events = (await pg_store.read_all()).events
    assert [e.data["n"] for e in events if e.stream_id == "run-held"] == [0, 1]
    assert len(events) == 12


async def test_a_batch_that_fails_fails_every_caller_and_writes_nothing(
    dsn: str, admin_dsn: str
) -> None:
    """If the shared transaction dies before its commit, every append in it gets the error
    and none of them is visible; retrying with the same ids then writes each once."""
    # One group in flight, so the three appends issued together share it.
    pg_store = await PostgresEventStore.connect(dsn, poll_interval=0.1, groups_in_flight=1)
    body = b"a payload another transaction is inserting"
    blocker = await asyncpg.connect(dsn)
    admin = await asyncpg.connect(admin_dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "INSERT INTO payloads (hash, size, content_type, content) VALUES ($1, $2, 'x', $3)",
            payload_ref(body), len(body), body,
        )  # fmt: skip
        batches = [[NewEvent("Happened", {"n": i}, event_id=uuid.uuid4())] for i in range(3)]
        calls = [
            pg_store.append("run-0", batches[0], payloads=[(body, "text/plain")]),
            pg_store.append("run-1", batches[1]),
            pg_store.append("run-2", batches[2]),
        ]
        failing = asyncio.gather(*calls, return_exceptions=True)
        waiting = None
        while waiting is None:  # the batch waits on the blocker's uncommitted payload row
            await asyncio.sleep(0.02)
            waiting = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = "
                "'Lock' AND pid <> $2",
                dsn.rsplit("/", 1)[1], blocker.get_server_pid(),
            )  # fmt: skip
        await admin.execute("SELECT pg_terminate_backend($1)", waiting)
        outcomes = await asyncio.wait_for(failing, 20)
        assert [type(o) for o in outcomes] == [StoreUnavailable] * 3
        for i in range(3):
            assert await pg_store.stream_version(f"run-{i}") == 0
        await tx.rollback()
        retried = await asyncio.gather(
            pg_store.append("run-0", batches[0], payloads=[(body, "text/plain")]),
            pg_store.append("run-1", batches[1]),
            pg_store.append("run-2", batches[2]),
        )
        assert [r.stream_version for r in retried] == [1, 1, 1]
        assert await pg_store.get_payload(payload_ref(body)) == body
        await pg_store.wait_visible()
        assert len((await pg_store.read_all()).events) == 3
    finally:
        await blocker.close()
        await admin.close()
        await pg_store.close()


async def test_cancelled_callers_leave_every_append_whole(pg_store: PostgresEventStore) -> None:
    """A caller cancelled while its append waits for (or rides in) a group commit: its append
    is either wholly committed or not at all, the others complete, and the store goes on."""
    batches = [
        [NewEvent("Happened", {"i": i, "k": k}, event_id=uuid.uuid4()) for k in (0, 1)]
        for i in range(40)
    ]
    tasks = [
        asyncio.create_task(pg_store.append(f"run-{i}", batch, "no_stream"))
        for i, batch in enumerate(batches)
    ]
    await asyncio.sleep(0)  # every append is queued, none taken yet
    for task in tasks[1::4]:
        task.cancel()
    for _ in range(3):  # a group is in flight now
        await asyncio.sleep(0)
    for task in tasks[3::4]:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i % 2 == 0:
            assert isinstance(outcome, AppendResult) and outcome.stream_version == 2
        stored = await pg_store.read_stream(f"run-{i}")
        assert [e.event_id for e in stored] in ([], [e.event_id for e in batches[i]])
    retried = await asyncio.gather(
        *(pg_store.append(f"run-{i}", b, "no_stream") for i, b in enumerate(batches))
    )
    assert all(r.stream_version == 2 for r in retried)
    assert retried[0::2] == outcomes[0::2]
    await pg_store.wait_visible()
    events = (await pg_store.read_all(limit=1000)).events
    assert len(events) == len({e.event_id for e in events}) == 80
