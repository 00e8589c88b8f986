"""The contract every event store honours: run against Postgres and the in-memory twin."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from eventstore import (
    AppendResult,
    Cursor,
    Filters,
    InMemoryEventStore,
    NewEvent,
    PostgresEventStore,
    RecordedEvent,
)
from eventstore.payloads import payload_ref
from eventstore.protocol import EventStore
from papayya.errors import (
    ConcurrencyError,
    IdempotencyConflict,
    InvalidCursor,
    InvalidEvent,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
)
from tests.support.db import cloned_database


@pytest.fixture(params=["memory", "postgres"])
async def store(
    request: pytest.FixtureRequest, admin_dsn: str, template_db: str
) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        memory = InMemoryEventStore()
        yield memory
        await memory.close()
        return
    async with cloned_database(admin_dsn, template_db) as dsn:
        pg = await PostgresEventStore.connect(dsn, poll_interval=0.1)
        yield pg
        await pg.close()


def ev(kind: str = "Happened", **data: object) -> NewEvent:
    return NewEvent(kind, dict(data))


async def test_append_returns_version_and_cursor(store: EventStore) -> None:
    first = await store.append("run-1", [ev(n=1), ev(n=2)], "no_stream")
    assert first.stream_version == 2
    second = await store.append("run-1", ev(n=3), 2)
    assert second.stream_version == 3
    assert second.cursor > first.cursor
    events = await store.read_stream("run-1")
    assert [e.data["n"] for e in events] == [1, 2, 3]
    assert [e.stream_version for e in events] == [1, 2, 3]
    assert events[0].category == "run"
    assert isinstance(events[0].recorded_at, datetime)
    assert await store.stream_version("run-1") == 3
    assert await store.stream_version("run-none") == 0


async def test_wrong_expected_version_writes_nothing(store: EventStore) -> None:
    await store.append("run-1", ev(), "no_stream")
    with pytest.raises(ConcurrencyError):
        await store.append("run-1", [ev(), ev()], 5)
    with pytest.raises(ConcurrencyError):
        await store.append("run-1", ev(), "no_stream")
    with pytest.raises(ConcurrencyError):
        await store.append("run-2", ev(), 1)
    assert await store.stream_version("run-1") == 1
    assert await store.stream_version("run-2") == 0
    await store.wait_visible()
    page = await store.read_all()
    assert len(page.events) == 1


async def test_any_version_creates_and_extends(store: EventStore) -> None:
    assert (await store.append("job-x", ev())).stream_version == 1
    assert (await store.append("job-x", [ev(), ev()], "any")).stream_version == 3


async def test_idempotent_retry_returns_first_result(store: EventStore) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    batch = [NewEvent("A", {"k": 1}, event_id=ids[0]), NewEvent("B", {"k": 2}, event_id=ids[1])]
    first = await store.append("run-1", batch, "no_stream")
    again = await store.append("run-1", batch, "no_stream")
    assert again == first
    also = await store.append("run-1", batch, "any")
    assert also == first
    assert await store.stream_version("run-1") == 2
    with pytest.raises(IdempotencyConflict):
        await store.append("run-1", NewEvent("A", {"k": 99}, event_id=ids[0]), "any")
    with pytest.raises(IdempotencyConflict):
        await store.append("run-2", NewEvent("A", {"k": 1}, event_id=ids[0]), "any")
    assert await store.stream_version("run-1") == 2


@pytest.mark.parametrize(
    ("stream_id", "events", "error"),
    [
        ("", [ev()], InvalidInput),
        ("x" * 201, [ev()], InvalidInput),
        ("run 1", [ev()], InvalidInput),
        (None, [ev()], InvalidInput),
        ("run-1", [], InvalidInput),
        ("run-1", ["not an event"], InvalidInput),
        ("run-1", [NewEvent("", {})], InvalidEvent),
        ("run-1", [NewEvent("bad type!", {})], InvalidEvent),
        ("run-1", [NewEvent("T" * 101, {})], InvalidEvent),
        ("run-1", [NewEvent("T", {"x": object()})], InvalidEvent),
        ("run-1", [NewEvent("T", {"x": "a\x00b"})], InvalidEvent),
        ("run-1", [NewEvent("T", {"x": "y" * 300_000})], PayloadTooLarge),
        ("run-1", [NewEvent("T", {}, metadata="m")], InvalidEvent),  # type: ignore[arg-type]
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(
    store: EventStore, stream_id: object, events: list[object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await store.append(stream_id, events)  # type: ignore[arg-type]
    await store.wait_visible()
    assert (await store.read_all()).events == []


async def test_bad_expected_version_and_limits(store: EventStore) -> None:
    for bad in (-1, "latest", True, 1.5):
        with pytest.raises(InvalidInput):
            await store.append("run-1", ev(), bad)  # type: ignore[arg-type]
    for bad_limit in (0, -5, 10**9, "10"):
        with pytest.raises(InvalidInput):
            await store.read_all(limit=bad_limit)  # type: ignore[arg-type]
    for bad_cursor in ("nonsense", "c_", "cZZ_1", "c-1_2"):
        with pytest.raises(InvalidCursor):
            await store.read_all(after=bad_cursor)
    await store.wait_visible()
    assert (await store.read_all()).events == []


async def test_duplicate_event_id_within_batch_is_refused(store: EventStore) -> None:
    same = uuid.uuid4()
    with pytest.raises(InvalidEvent):
        await store.append("run-1", [NewEvent("A", {}, event_id=same)] * 2)
    assert await store.stream_version("run-1") == 0


async def test_read_stream_range(store: EventStore) -> None:
    await store.append("run-1", [ev(n=i) for i in range(1, 11)])
    middle = await store.read_stream("run-1", from_version=3, to_version=5)
    assert [e.stream_version for e in middle] == [3, 4, 5]
    assert await store.read_stream("run-404") == []


async def test_read_all_pages_with_opaque_cursor(store: EventStore) -> None:
    for i in range(25):
        await store.append(f"run-{i % 3}", ev(n=i))
    seen: list[int] = []
    cursor: str | None = None
    await store.wait_visible()
    while True:
        page = await store.read_all(after=cursor, limit=7)
        seen.extend(e.data["n"] for e in page.events)
        if not page.events:
            break
        cursor = str(page.cursor)
        assert Cursor.parse(cursor) == page.cursor
    assert seen == list(range(25))


async def test_read_all_filters(store: EventStore) -> None:
    await store.append("run-1", [ev("Started"), ev("Stepped")])
    await store.append("agent-1", ev("Defined"))
    await store.append("run-2", ev("Started"))
    await store.wait_visible()
    runs = await store.read_all(filters=Filters.of(categories=["run"]))
    assert [e.stream_id for e in runs.events] == ["run-1", "run-1", "run-2"]
    started = await store.read_all(filters=Filters.of(types=["Started"]))
    assert [e.stream_id for e in started.events] == ["run-1", "run-2"]
    one = await store.read_all(filters=Filters.of(streams="run-2"))
    assert [e.event_type for e in one.events] == ["Started"]
    # The cursor moves past filtered-out events, so the next read does not rescan them.
    after = await store.read_all(after=runs.cursor, filters=Filters.of(categories=["run"]))
    assert after.events == []
    with pytest.raises(InvalidInput):
        Filters.of(categories=[])


async def test_subscribe_catches_up_then_follows_live(store: EventStore) -> None:
    await store.append("run-1", [ev(n=0), ev(n=1)])
    got: list[int] = []

    async def consume() -> None:
        async with store.subscribe() as sub:
            async for event in sub:
                got.append(event.data["n"])
                if len(got) == 5:
                    return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    for n in (2, 3, 4):
        await store.append("run-2", ev(n=n))
    await asyncio.wait_for(task, 5)
    assert got == [0, 1, 2, 3, 4]


async def test_subscribe_resumes_from_cursor_with_filters(store: EventStore) -> None:
    first = await store.append("run-1", ev("A", n=1))
    await store.append("agent-1", ev("A", n=2))
    await store.append("run-1", ev("B", n=3))
    got = []
    async with store.subscribe(after=first.cursor, filters=Filters.of(categories="run")) as sub:
        async for event in sub:
            got.append(event.data["n"])
            break
    assert got == [3]


async def test_payloads_are_content_addressed(store: EventStore) -> None:
    ref = await store.put_payload(b"a long prompt" * 100, "text/plain")
    assert ref.startswith("sha256:")
    assert await store.put_payload(b"a long prompt" * 100) == ref
    assert await store.get_payload(ref) == b"a long prompt" * 100
    with pytest.raises(NotFound):
        await store.get_payload("sha256:" + "0" * 64)
    with pytest.raises(InvalidInput):
        await store.get_payload("md5:abc")
    with pytest.raises(InvalidInput):
        await store.put_payload("text")  # type: ignore[arg-type]


async def test_summary_is_written_with_the_append(store: EventStore) -> None:
    await store.append("run-1", ev(n=1), summary={"status": "queued"})
    assert await store.summary("run-1") == (1, {"status": "queued"})
    await store.append("run-1", [ev(n=2), ev(n=3)], 1, summary={"status": "running"})
    assert await store.summary("run-1") == (3, {"status": "running"})
    await store.append("run-1", ev(n=4))  # no summary given: the last one stays
    assert await store.summary("run-1") == (3, {"status": "running"})
    with pytest.raises(ConcurrencyError):
        await store.append("run-1", ev(), 1, summary={"status": "lost"})
    assert await store.summary("run-1") == (3, {"status": "running"})
    with pytest.raises(InvalidEvent):
        await store.append("run-2", ev(), summary={"x": object()})
    assert await store.summary("run-2") is None and await store.stream_version("run-2") == 0
    await store.append("run-0", ev(), summary={"status": "queued"})
    await store.append("agent-1", ev(), summary={"name": "a"})
    listed = await store.summaries("run")
    assert [sid for sid, _, _ in listed] == ["run-0", "run-1"]
    assert [sid for sid, _, _ in await store.summaries("run", after="run-0")] == ["run-1"]


async def test_payloads_can_ride_with_an_append(store: EventStore) -> None:
    from eventstore.payloads import payload_ref

    body = b'{"messages": ["a long prompt"]}'
    await store.append("run-1", ev(ref=payload_ref(body)), payloads=[(body, "application/json")])
    assert await store.get_payload(payload_ref(body)) == body
    with pytest.raises(ConcurrencyError):
        await store.append("run-1", ev(), 7, payloads=[(b"lost", "text/plain")])
    with pytest.raises(NotFound):
        await store.get_payload(payload_ref(b"lost"))


async def read_everything(store: EventStore) -> list[RecordedEvent]:
    """The whole global order, in small pages, once every append is visible."""
    await store.wait_visible()
    events: list[RecordedEvent] = []
    cursor: Cursor | None = None
    while True:
        page = await store.read_all(after=cursor, limit=7)
        if not page.events:
            return events
        events.extend(page.events)
        cursor = page.cursor


async def test_concurrent_mixed_appends_each_get_their_own_outcome(store: EventStore) -> None:
    """Appends issued together (the Postgres store commits them as a group) keep every
    per-append guarantee: a conflict, a retry or a reused id touches only its own caller,
    and the global order holds each committed event once, in each stream's order."""
    n = 12
    seeded = []
    for i in range(n):
        batch = [NewEvent("Seeded", {"i": i}, event_id=uuid.uuid4())]
        seeded.append((batch, await store.append(f"run-m{i}", batch, "no_stream")))

    def body(kind: str, i: int) -> bytes:
        return f"{kind} payload {i} {uuid.uuid4()}".encode()

    good = [[NewEvent("Good", {"i": i}, event_id=uuid.uuid4())] for i in range(n)]
    good_bodies = [body("good", i) for i in range(n)]
    stale_bodies = [body("stale", i) for i in range(n)]
    shared = [[ev("Shared", i=i, k=k) for k in range(2)] for i in range(n)]
    doubles = [[NewEvent("Double", {"i": i, "k": k}, event_id=uuid.uuid4()) for k in (0, 1)]
               for i in range(n)]  # fmt: skip
    racers = [[[ev("Racer", i=i, r=r)] for r in range(3)] for i in range(n)]
    calls: list[tuple[str, int, Any]] = []
    for i in range(n):
        calls += [
            ("good", i, store.append(f"run-m{i}", good[i], 1, summary={"i": i},
                                     payloads=[(good_bodies[i], "text/plain")])),
            ("stale", i, store.append(f"run-m{i}", ev("Stale"), "no_stream",
                                      payloads=[(stale_bodies[i], "text/plain")])),
            ("stale", i, store.append(f"run-m{i}", ev("Stale"), 5)),
            ("retry", i, store.append(f"run-m{i}", seeded[i][0], "no_stream")),
            ("reuse", i, store.append(f"run-m{i}", [NewEvent(
                "Seeded", {"i": -1}, event_id=seeded[i][0][0].event_id)], "any")),
            ("shared", i, store.append("job-shared", shared[i])),
            ("double", i, store.append(f"run-d{i}", doubles[i], "no_stream")),
            ("double", i, store.append(f"run-d{i}", doubles[i], "no_stream")),
            *[("race", i, store.append(f"run-r{i}", racers[i][r], "no_stream"))
              for r in range(3)],
        ]  # fmt: skip
    random.Random(15).shuffle(calls)
    outcomes = await asyncio.gather(*(call for _, _, call in calls), return_exceptions=True)

    by_kind: dict[tuple[str, int], list[Any]] = {}
    for (kind, i, _), outcome in zip(calls, outcomes, strict=True):
        by_kind.setdefault((kind, i), []).append(outcome)
    shared_versions = []
    for i in range(n):
        [good_result] = by_kind["good", i]
        assert isinstance(good_result, AppendResult) and good_result.stream_version == 2
        assert all(isinstance(r, ConcurrencyError) for r in by_kind["stale", i])
        assert by_kind["retry", i] == [seeded[i][1]]
        assert [type(r) for r in by_kind["reuse", i]] == [IdempotencyConflict]
        [shared_result] = by_kind["shared", i]
        assert isinstance(shared_result, AppendResult)
        shared_versions.append(shared_result.stream_version)
        first, second = by_kind["double", i]
        assert isinstance(first, AppendResult) and first == second
        assert first.stream_version == 2
        race = by_kind["race", i]
        assert sum(isinstance(r, AppendResult) for r in race) == 1
        assert sum(isinstance(r, ConcurrencyError) for r in race) == 2
    assert sorted(shared_versions) == list(range(2, 2 * n + 1, 2))

    for i in range(n):
        assert await store.stream_version(f"run-m{i}") == 2
        assert await store.stream_version(f"run-d{i}") == 2
        assert await store.stream_version(f"run-r{i}") == 1
        assert await store.summary(f"run-m{i}") == (2, {"i": i})
        assert await store.get_payload(payload_ref(good_bodies[i])) == good_bodies[i]
        with pytest.raises(NotFound):
            await store.get_payload(payload_ref(stale_bodies[i]))
        stream = await store.read_stream(f"run-m{i}")
        assert [(e.event_type, e.data) for e in stream] == [
            ("Seeded", {"i": i}),
            ("Good", {"i": i}),
        ]
        winner = next(r for r in by_kind["race", i] if isinstance(r, AppendResult))
        [raced] = await store.read_stream(f"run-r{i}")
        assert raced.cursor == winner.cursor
    assert await store.stream_version("job-shared") == 2 * n

    everything = await read_everything(store)
    ids = [e.event_id for e in everything]
    assert len(ids) == len(set(ids)) == n * (1 + 1 + 2 + 2 + 1)
    cursors = [e.cursor for e in everything]
    assert cursors == sorted(cursors)
    per_stream: dict[str, list[int]] = {}
    for event in everything:
        per_stream.setdefault(event.stream_id, []).append(event.stream_version)
    assert all(v == list(range(1, len(v) + 1)) for v in per_stream.values())
    ends = {e.cursor for e in everything}
    results = [r for r in outcomes if isinstance(r, AppendResult)]
    assert all(r.cursor in ends for r in results)
    expected_ids = {e.event_id for batch in good + doubles for e in batch}
    expected_ids |= {batch[0].event_id for batch, _ in seeded}
    assert expected_ids <= set(ids)
    for i in range(n):  # and every success stays retryable
        assert await store.append(f"run-m{i}", good[i], 1) == by_kind["good", i][0]


async def _attached(hub: Any, subscription: Any) -> None:
    async with asyncio.timeout(5):
        while subscription not in hub._subscribers:
            await asyncio.sleep(0.005)


async def test_the_tailer_reads_only_what_its_subscriptions_want(store: EventStore) -> None:
    """A process that follows a few event types (a worker: cancellations and ends) has its
    tailer fetch those, not every event of every run on each commit."""
    hub = store.hub  # type: ignore[attr-defined]
    returned: list[str] = []
    read = hub.read_page

    async def counting(after: Cursor, limit: int, filters: Filters) -> Any:
        page = await read(after, limit, filters)
        returned.extend(e.event_type for e in page.events)
        return page

    hub.read_page = counting
    got: list[int] = []
    async with store.subscribe(after=await store.head(), filters=Filters.of(types="Stop")) as sub:

        async def consume() -> None:
            async for event in sub:
                got.append(event.data["n"])
                if len(got) == 3:
                    return

        task = asyncio.create_task(consume())
        await _attached(hub, sub)
        for n in range(3):
            await store.append(f"run-{n}", [ev("Step", n=n) for _ in range(5)] + [ev("Stop", n=n)])
        await asyncio.wait_for(task, 5)
    assert got == [0, 1, 2]
    assert set(returned) == {"Stop"}


async def test_a_subscription_that_appears_during_a_narrower_read_misses_nothing(
    store: EventStore,
) -> None:
    """The tailer's read in flight asked for another subscription's events only: a new
    subscription is not attached to it (its events would be skipped), it catches up itself."""
    hub = store.hub  # type: ignore[attr-defined]
    stops = store.subscribe(after=await store.head(), filters=Filters.of(types="Stop"))
    stopped = asyncio.create_task(anext(stops))
    await _attached(hub, stops)
    reading, release = asyncio.Event(), asyncio.Event()
    read, attach = hub.read_page, hub.try_attach

    async def held(after: Cursor, limit: int, filters: Filters) -> Any:
        if filters is getattr(hub, "_reading", None) and not release.is_set():
            reading.set()  # the tailer's read, asking for "Stop" only
            await release.wait()
        return await read(after, limit, filters)

    tried = asyncio.Event()

    def attempt(subscription: Any) -> bool:
        if subscription is steps:
            tried.set()
        return bool(attach(subscription))

    hub.read_page, hub.try_attach = held, attempt
    start = await store.head()
    await store.append("run-a", ev("Stop", n=0))
    await asyncio.wait_for(reading.wait(), 5)
    steps = store.subscribe(after=start, filters=Filters.of(types="Step"))
    got: list[int] = []

    async def consume() -> None:
        async for event in steps:
            got.append(event.data["n"])
            if len(got) == 4:
                return

    await store.append("run-b", [ev("Step", n=1), ev("Step", n=2)])
    task = asyncio.create_task(consume())
    await asyncio.wait_for(tried.wait(), 5)  # it caught up and asked to attach
    await store.append("run-b", [ev("Step", n=3), ev("Step", n=4)], 2)
    release.set()
    await asyncio.wait_for(task, 5)
    assert got == [1, 2, 3, 4]
    assert (await asyncio.wait_for(stopped, 5)).data["n"] == 0
    await steps.close()
    await stops.close()
