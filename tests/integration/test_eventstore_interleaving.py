"""Property: under concurrent writers with random aborts and random commit delays, every
subscriber sees every committed event exactly once, in one total order, and never an aborted
one. The serialized mode (a global lock per append) is the oracle whose order is simply the
position order; the fenced mode must deliver the same set with the same guarantees."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import AppendResult, Cursor, NewEvent, PostgresEventStore, RecordedEvent
from eventstore.subscriptions import Subscription
from eventstore.types import ExpectedVersion
from papayya.errors import ConcurrencyError

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
Write = tuple[int, int, bool, int]
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
    dsn: str, store: PostgresEventStore, serialized: bool, writers: list[list[Write]]
) -> None:
    prefix = uuid.uuid4().hex[:8]
    start = await store.head()
    early = [store.subscribe(after=start) for _ in range(3)]
    consumers = [asyncio.create_task(drain(s, 0)) for s in early]
    for task in consumers:
        await task
    results = await asyncio.gather(*(run_writer(dsn, prefix, serialized, w) for w in writers))
    committed = [i for ids in results for i in ids]
    await check_delivery(store, start, early, committed, serialized)


async def check_delivery(
    store: PostgresEventStore,
    start: Cursor,
    early: list[Subscription],
    committed: list[uuid.UUID],
    serialized: bool,
) -> None:
    """Every subscriber, early or late, sees exactly ``committed`` in one order that keeps
    each stream's versions in order; one resumed from the middle sees exactly the rest."""
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
    dsn: str, writers: list[list[Write]]
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
async def test_serialized_oracle_agrees(dsn: str, writers: list[list[Write]]) -> None:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    try:
        await check_interleaving(dsn, store, True, writers)
    finally:
        await store.close()


append_op = st.tuples(
    st.integers(0, 1),  # which of two stores (two processes' worth of group commits)
    st.integers(0, 3),  # stream
    st.integers(1, 3),  # batch size
    st.sampled_from(["any", "at_version", "stale", "repeat"]),
)


@pytest.mark.parametrize("serialized", [False, True], ids=["fenced", "serialized"])
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(append_op, min_size=2, max_size=40), writers=scripts)
async def test_group_commits_deliver_every_commit_once_in_one_order(
    dsn: str, serialized: bool, ops: list[tuple[int, int, int, str]], writers: list[list[Write]]
) -> None:
    """Store appends issued at once from two stores, so that they commit in groups, beside
    raw writers that hold transactions open: each append gets its own outcome and the
    subscribers see every committed event once, in one order."""
    stores = [
        await PostgresEventStore.connect(dsn, serialized=serialized, poll_interval=0.05)
        for _ in range(2)
    ]
    try:
        prefix = uuid.uuid4().hex[:8]
        start = await stores[0].head()
        early = [stores[0].subscribe(after=start) for _ in range(2)]
        for sub in early:
            await drain(sub, 0)
        versions = {s: await stores[0].stream_version(f"run-{prefix}{s}") for s in range(4)}
        calls: list[tuple[list[NewEvent], str, str, Any]] = []
        for which, stream, size, kind in ops:
            retryable = [c for c in calls if c[2] != "stale"]
            if kind == "repeat" and retryable:  # a retry of an earlier append, same ids
                batch, stream_id = retryable[-1][0], retryable[-1][1]
            else:
                batch = [NewEvent("Happened", {"s": stream}, event_id=uuid.uuid4())
                         for _ in range(size)]  # fmt: skip
                stream_id = f"run-{prefix}{stream}"
            expected: ExpectedVersion = "any"
            if kind in ("stale", "at_version"):
                expected = 10_000 if kind == "stale" else versions[stream]
            calls.append((batch, stream_id, kind, stores[which].append(stream_id, batch, expected)))
        raw = asyncio.gather(*(run_writer(dsn, prefix, serialized, w) for w in writers))
        outcomes = await asyncio.gather(*(c[3] for c in calls), return_exceptions=True)
        raw_ids = [i for ids in await raw for i in ids]
        committed: dict[int, tuple[list[NewEvent], AppendResult]] = {}
        for (batch, _, kind, _), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, AppendResult):
                assert kind != "stale"
                # Every call with the same ids gets the first result.
                assert committed.setdefault(id(batch), (batch, outcome))[1] == outcome
            else:
                assert isinstance(outcome, ConcurrencyError), outcome
                assert kind in ("stale", "at_version", "repeat")
        for stream_id in {c[1] for c in calls}:
            stored = await stores[0].read_stream(stream_id)
            assert [e.stream_version for e in stored] == list(range(1, len(stored) + 1))
        ids = [e.event_id for batch, _ in committed.values() for e in batch if e.event_id]
        await check_delivery(stores[0], start, early, ids + raw_ids, serialized)
    finally:
        for store in stores:
            await store.close()
