"""The scheduler against Postgres, with a clock the tests move: runs per fire, two
schedulers at once, a crash between queueing and recording, downtime (catchup_policy), a
run still going (overlap_policy), pauses, and the scheduler inside a live server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.triggers.firing import start_scheduled_run
from papayya.triggers.scheduler import Fire, Schedule, Scheduler, fire_key, fire_run_id
from tests.support.api import Api, call, create_agent, create_schedule, page, running_api
from tests.support.db import db_fetch
from web import keys


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def scheduler(store: PostgresEventStore, clock: Clock, **kwargs: Any) -> Scheduler:
    return Scheduler(store, start_scheduled_run(store), clock=clock, **kwargs)


async def next_fire(dsn: str, sid: str) -> datetime:
    [row] = await db_fetch(dsn, "SELECT next_fire_at FROM schedules WHERE schedule_id = $1", sid)
    return row["next_fire_at"]  # type: ignore[no-any-return]


async def fires(dsn: str, sid: str) -> list[tuple[Any, ...]]:
    rows = await db_fetch(
        dsn,
        "SELECT fire_at, status, run_id, reason FROM schedule_fires WHERE schedule_id = $1"
        " ORDER BY fire_at",
        sid,
    )
    return [tuple(r) for r in rows]


async def schedule_runs(api: Api) -> list[dict[str, Any]]:
    found = await api.app[keys.STORE].summaries("run")
    return [s for _, _, s in found if s.get("trigger") == "schedule"]


@pytest.fixture
async def minutely(api: Api, http: Any) -> AsyncIterator[dict[str, Any]]:
    await create_agent(api, http, "ticker")
    yield await create_schedule(
        api, http, "ticker", cron_expression="* * * * *", timezone="UTC", input={"n": 1}
    )


async def test_a_fire_queues_one_run_like_the_api(
    api: Api, http: Any, dsn: str, minutely: dict[str, Any]
) -> None:
    sid = minutely["id"]
    first = await next_fire(dsn, sid)
    clock = Clock(first - timedelta(seconds=1))
    s = scheduler(api.app[keys.STORE], clock)
    assert await s.tick() == []  # not due yet
    clock.advance(seconds=1.5)
    [fire] = await s.tick()
    assert fire == Fire(sid, first, "started", fire_run_id(sid, first))
    assert await s.tick() == []  # handled: the same moment does not fire again
    assert await next_fire(dsn, sid) == first + timedelta(minutes=1)

    status, run = await call(api, http, "GET", f"/v1/runs/{fire.run_id}")
    assert status == 200 and run["status"] == "queued" and run["trigger"] == "schedule"
    assert run["input"] == {"n": 1} and run["agent_id"] == minutely["agent_id"]
    assert run["idempotency_key"] == fire_key(sid, first)
    status, listed = await call(api, http, "GET", f"/v1/schedules/{sid}/fires")
    assert listed[0]["run_id"] == fire.run_id and listed[0]["status"] == "started"
    status, got = await call(api, http, "GET", f"/v1/schedules/{sid}")
    assert got["last_run_id"] == fire.run_id and got["last_fire_at"] is not None


async def test_two_schedulers_make_one_run_per_fire(
    api: Api, http: Any, dsn: str, minutely: dict[str, Any]
) -> None:
    sid = minutely["id"]
    await create_schedule(
        api, http, "ticker", cron_expression="*/2 * * * *", timezone="Asia/Kolkata",
        overlap_policy="allow",
    )  # fmt: skip
    # allow on the minutely one too, so every fire starts a run.
    await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"overlap_policy": "allow"})
    start = await next_fire(dsn, sid)
    clocks = [Clock(start), Clock(start)]
    stores = [await PostgresEventStore.connect(dsn) for _ in clocks]
    try:
        schedulers = [scheduler(st, c) for st, c in zip(stores, clocks, strict=True)]
        rng = random.Random(7)
        handled: list[list[Fire]] = [[], []]
        for _ in range(40):  # 40 rounds, each scheduler's clock 0-59 s ahead of the last
            for clock in clocks:
                clock.advance(seconds=rng.randint(0, 59))
            results = await asyncio.gather(*(s.tick() for s in schedulers))
            for mine, result in zip(handled, results, strict=True):
                mine += result
    finally:
        for st in stores:
            await st.close()
    assert all(len(h) > 5 for h in handled)  # both took part
    runs = await schedule_runs(api)
    recorded = await db_fetch(dsn, "SELECT schedule_id, fire_at, run_id FROM schedule_fires")
    assert len(handled[0]) + len(handled[1]) == len(recorded) > 20
    started = [r["run_id"] for r in recorded if r["run_id"] is not None]
    assert sorted(started) == sorted(r["run_id"] for r in runs)
    assert len({(r["schedule_id"], r["fire_at"]) for r in recorded}) == len(recorded)
    assert len({r["run_id"] for r in runs}) == len(runs)


async def test_a_crash_before_recording_the_fire_finds_its_run_again(
    api: Api, dsn: str, minutely: dict[str, Any]
) -> None:
    store = api.app[keys.STORE]
    sid = minutely["id"]
    first = await next_fire(dsn, sid)
    clock = Clock(first + timedelta(seconds=2))
    start = start_scheduled_run(store)

    async def queue_then_die(schedule: Schedule, fire_at: datetime, run_id: str) -> str:
        await start(schedule, fire_at, run_id)
        raise ConnectionResetError("the scheduler's process died")

    with pytest.raises(ConnectionResetError):
        await Scheduler(store, queue_then_die, clock=clock).tick()
    assert await fires(dsn, sid) == [] and await next_fire(dsn, sid) == first  # rolled back
    [orphan] = await schedule_runs(api)
    # Another scheduler redoes the fire; the run it finds is the one already queued.
    [fire] = await scheduler(store, clock).tick()
    assert fire.status == "started" and fire.run_id == orphan["run_id"]
    assert len(await schedule_runs(api)) == 1


@pytest.mark.parametrize(
    ("policy", "started", "skipped"),
    [("latest", [3], [0, 1, 2]), ("all", [0, 1, 2, 3], []), ("none", [], [0, 1, 2, 3])],
)
async def test_downtime_follows_the_catchup_policy(
    api: Api, http: Any, dsn: str, policy: str, started: list[int], skipped: list[int]
) -> None:
    await create_agent(api, http, "hourly")
    schedule = await create_schedule(
        api, http, "hourly", cron_expression="15 * * * *", timezone="Europe/London",
        catchup_policy=policy, overlap_policy="allow",
    )  # fmt: skip
    sid = schedule["id"]
    first = await next_fire(dsn, sid)
    # Down from before the first fire until 40 minutes after the fourth.
    clock = Clock(first + timedelta(hours=3, minutes=40))
    handled = await scheduler(api.app[keys.STORE], clock).tick()
    due = [first + timedelta(hours=h) for h in range(4)]
    assert [f.fire_at for f in handled] == due
    recorded = await fires(dsn, sid)
    assert [r[0] for r in recorded if r[1] == "started"] == [due[i] for i in started]
    assert [r[0] for r in recorded if r[1] == "skipped"] == [due[i] for i in skipped]
    assert all(r[3] == "missed" for r in recorded if r[1] == "skipped")
    assert len(await schedule_runs(api)) == len(started)
    assert await next_fire(dsn, sid) == first + timedelta(hours=4)
    listed, more = await page(api, http, f"/v1/schedules/{sid}/fires", limit=3)
    assert [f["status"] for f in listed] == [recorded[i][1] for i in (3, 2, 1)]
    assert all(f["detail"] for f in listed if f["status"] == "skipped")
    rest, _ = await page(api, http, f"/v1/schedules/{sid}/fires", cursor=more)
    assert [datetime.fromisoformat(f["fire_at"]) for f in rest] == [due[0]]


async def test_a_week_long_downtime_stays_bounded(
    api: Api, dsn: str, minutely: dict[str, Any]
) -> None:
    sid = minutely["id"]
    first = await next_fire(dsn, sid)
    clock = Clock(first + timedelta(days=30))
    handled = await scheduler(api.app[keys.STORE], clock).tick()
    assert len(handled) == 1000 and handled[-1].fire_at == first + timedelta(days=30)
    assert [f.status for f in handled].count("started") == 1


async def test_a_run_still_going_follows_the_overlap_policy(
    api: Api, http: Any, dsn: str, minutely: dict[str, Any]
) -> None:
    store = api.app[keys.STORE]
    runs = api.app[keys.RUNS]
    sid = minutely["id"]
    clock = Clock(await next_fire(dsn, sid))
    s = scheduler(store, clock)
    [first] = await s.tick()
    assert first.run_id is not None
    state = await runs.append(await runs.load(first.run_id), [ev.RunStarted(attempt=1)])
    clock.advance(minutes=1)
    [second] = await s.tick()
    assert (second.status, second.reason) == ("skipped", "overlap")
    assert (
        second.detail is not None and first.run_id in second.detail and "running" in second.detail
    )

    await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"overlap_policy": "allow"})
    clock.advance(minutes=1)
    [third] = await s.tick()
    assert third.status == "started" and third.run_id != first.run_id

    # The previous run is now the third one: once it ends, skip lets the next fire run.
    await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"overlap_policy": "skip"})
    clock.advance(minutes=1)
    [fourth] = await s.tick()
    assert fourth.reason == "overlap" and third.run_id in (fourth.detail or "")
    await call(api, http, "POST", f"/v1/runs/{third.run_id}/cancel")
    clock.advance(minutes=1)
    [fifth] = await s.tick()
    assert fifth.status == "started"
    await runs.append(state, [ev.RunCompleted(output="ok")])
    assert len(await schedule_runs(api)) == 3


async def test_paused_schedules_do_not_fire(
    api: Api, http: Any, dsn: str, minutely: dict[str, Any]
) -> None:
    sid = minutely["id"]
    first = await next_fire(dsn, sid)
    await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"enabled": False})
    assert await scheduler(api.app[keys.STORE], Clock(first + timedelta(hours=1))).tick() == []
    assert await fires(dsn, sid) == []


async def test_fires_whose_run_exists_or_cannot_be_queued(
    api: Api, http: Any, dsn: str, minutely: dict[str, Any]
) -> None:
    sid = minutely["id"]
    await call(api, http, "PATCH", f"/v1/schedules/{sid}", {"overlap_policy": "allow"})
    # A key the project already used for another run names that run: the fire is that run.
    first = await next_fire(dsn, sid)
    body = {"agent_id": "ticker", "idempotency_key": fire_key(sid, first)}
    status, run = await call(api, http, "POST", "/v1/runs", body)
    assert status == 201
    [fire] = await scheduler(api.app[keys.STORE], Clock(first)).tick()
    assert fire.run_id == run["id"]
    # A schedule whose stored options no longer make a valid run records the error.
    await db_fetch(
        dsn,
        "UPDATE schedules SET input = $1 WHERE schedule_id = $2",
        '"' + "x" * 300_000 + '"',
        sid,
    )
    [fire] = await scheduler(api.app[keys.STORE], Clock(first + timedelta(minutes=1))).tick()
    assert (fire.status, fire.reason) == ("skipped", "error") and "larger" in (fire.detail or "")


async def test_the_loop_ticks_until_stopped(api: Api, dsn: str, minutely: dict[str, Any]) -> None:
    sid = minutely["id"]
    clock = Clock(await next_fire(dsn, sid))
    s = scheduler(api.app[keys.STORE], clock, poll_interval=0.05)
    task = asyncio.create_task(s.run())
    for _ in range(100):
        if await fires(dsn, sid):
            break
        await asyncio.sleep(0.05)
    clock.advance(minutes=1)
    for _ in range(100):
        if len(await fires(dsn, sid)) == 2:
            break
        await asyncio.sleep(0.05)
    s.stop()
    await asyncio.wait_for(task, 5)
    assert [f[1] for f in await fires(dsn, sid)] == ["started", "skipped"]  # overlap: queued


async def test_the_server_runs_a_scheduler(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any
) -> None:
    async with running_api(dsn, monkeypatch, scheduler=True) as api:
        await create_agent(api, http, "live")
        schedule = await create_schedule(api, http, "live", cron_expression="0 0 1 1 *")
        sid = schedule["id"]
        due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        await db_fetch(
            dsn, "UPDATE schedules SET next_fire_at = $1 WHERE schedule_id = $2", due, sid
        )
        listed: dict[str, Any] = {"data": []}
        for _ in range(100):
            _, listed = await call(api, http, "GET", f"/v1/schedules/{sid}/fires")
            if listed:
                break
            await asyncio.sleep(0.1)
        [fire] = listed
        assert fire["status"] == "started" and datetime.fromisoformat(fire["fire_at"]) == due


async def test_grace_decides_what_none_catches_up(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "strict")
    schedule = await create_schedule(
        api, http, "strict", cron_expression="0 * * * *", timezone="UTC", catchup_policy="none"
    )
    first = await next_fire(dsn, schedule["id"])
    clock = Clock(first + timedelta(hours=1, minutes=40))
    s = scheduler(api.app[keys.STORE], clock, grace=timedelta(hours=1))
    assert [f.status for f in await s.tick()] == ["skipped", "started"]
