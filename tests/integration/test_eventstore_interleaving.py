"""Property: under concurrent writers with random aborts and random commit delays, every
subscriber sees every committed event exactly once, in one total order, and never an aborted
one. The serialized mode (a global lock per append) is the oracle whose order is simply the
position order; the fenced mode must deliver the same set with the same guarantees."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import Cursor, PostgresEventStore, RecordedEvent

APPEND = (
    "SELECT * FROM papayya_append($1, 'run', -1, $2, $3::uuid[], $4::text[], $5::int[], "
    "$6::jsonb[], $7::jsonb[])"
)

write = st.tuples(
    st.integers(0, 3),  # stream
    st.integers(1, 3),  # batch size
    st.booleans(),  # abort
    st.integers(0, 15),  # ms to hold the transaction open
)
scripts = st.lists(st.lists(write, min_size=1, max_size=6), min_size=2, max_size=6)


async def run_writer(
    dsn: str, prefix: str, serialized: bool, script: list[tuple[int, int, bool, int]]
) -> list[uuid.UUID]:
    committed: list[uuid.UUID] = []
    conn = await asyncpg.connect(dsn)
    try:
        for stream, size, abort, hold_ms in script:
            ids = [uuid.uuid4() for _ in range(size)]
            tx = conn.transaction()
            await tx.start()
            await conn.fetch(
                APPEND,
                f"run-{prefix}{stream}",
                serialized,
                ids,
                ["Happened"] * size,
                [1] * size,
                [msgspec.json.encode({"id": str(i)}).decode() for i in ids],
                ["{}"] * size,
            )
            await asyncio.sleep(hold_ms / 1000)
            if abort:
                await tx.rollback()
            else:
                await tx.commit()
                committed.extend(ids)
    finally:
        await conn.close()
    return committed


async def drain(sub: object, expected: int) -> list[RecordedEvent]:
    got: list[RecordedEvent] = []

    async def run() -> None:
        async for event in sub:  # type: ignore[attr-defined]
            got.append(event)
            if len(got) == expected:
                return

    if expected:
        await asyncio.wait_for(run(), 15)
    return got


async def check_interleaving(
    dsn: str, store: PostgresEventStore, serialized: bool, writers: list[list[tuple]]
) -> None:
    prefix = uuid.uuid4().hex[:8]
    start = await store.head()
    early = [store.subscribe(after=start) for _ in range(3)]
    consumers = [asyncio.create_task(drain(s, 0)) for s in early]
    for task in consumers:
        await task
    results = await asyncio.gather(*(run_writer(dsn, prefix, serialized, w) for w in writers))
    committed = [i for ids in results for i in ids]
    seen = [await drain(s, len(committed)) for s in early]
    late = store.subscribe(after=start)
    seen.append(await drain(late, len(committed)))
    orders = [[e.event_id for e in events] for events in seen]
    assert all(order == orders[0] for order in orders), "subscribers disagree on the order"
    assert sorted(orders[0]) == sorted(committed), "an event was lost, duplicated or invented"
    cursors = [e.cursor for e in seen[0]]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    per_stream: dict[str, list[int]] = {}
    for event in seen[0]:
        per_stream.setdefault(event.stream_id, []).append(event.stream_version)
    assert all(v == sorted(v) for v in per_stream.values())
    if serialized:
        positions = [e.global_position for e in seen[0]]
        assert positions == sorted(positions)
    # A subscriber resuming from the middle sees exactly the rest.
    if len(seen[0]) > 1:
        middle = len(seen[0]) // 2
        resumed = store.subscribe(after=str(seen[0][middle - 1].cursor))
        rest = await drain(resumed, len(committed) - middle)
        assert [e.event_id for e in rest] == orders[0][middle:]
        await resumed.close()
    for sub in [*early, late]:
        await sub.close()
    assert Cursor.parse(str(start)) == start


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(writers=scripts)
async def test_fenced_mode_delivers_every_commit_once_in_one_order(
    dsn: str, writers: list[list[tuple]]
) -> None:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    try:
        await check_interleaving(dsn, store, False, writers)
    finally:
        await store.close()


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(writers=scripts)
async def test_serialized_oracle_agrees(dsn: str, writers: list[list[tuple]]) -> None:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    try:
        await check_interleaving(dsn, store, True, writers)
    finally:
        await store.close()
