"""The worker's reading of its agents' heartbeats (``workers.timelimits.HeartbeatWatch``) on
a real ``run_heartbeats`` table: silence counts in the worker's clock from the attempt's start
or its last new heartbeat, only the attempt's own heartbeats count, and a time the heartbeats
could not be read (Postgres away) is not held against an agent."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from eventstore.postgres import PostgresEventStore
from papayya.readmodels.heartbeats import Heartbeats
from workers.timelimits import HeartbeatWatch

BOUND = 0.4
BEAT = (
    "INSERT INTO run_heartbeats (run_id, attempt, at) VALUES ($1, $2, clock_timestamp()) "
    "ON CONFLICT (run_id) DO UPDATE SET attempt = EXCLUDED.attempt, at = EXCLUDED.at"
)


async def past_the_bound() -> None:
    await asyncio.sleep(BOUND + 0.1)  # time has to pass for a bound of time to be crossed


async def test_silence_is_counted_from_the_last_new_heartbeat_of_the_attempt(dsn: str) -> None:
    store = await PostgresEventStore.connect(dsn, min_size=1, max_size=2)
    pool, beats = store.pool, Heartbeats(store)
    try:
        watch = HeartbeatWatch(BOUND)
        watch.started("beating", 1)
        watch.started("silent", 2)
        watch.started("starting", 1)
        # Built-in loops are unwatched; "silent" beat once, then stopped.
        attempts = {"beating": 1, "silent": 2, "starting": 1, "unwatched": 1}
        await pool.execute(BEAT, "beating", 1)
        await pool.execute(BEAT, "silent", 2)
        assert await watch.silent(beats, attempts) == {}
        await past_the_bound()
        await pool.execute(BEAT, "beating", 1)
        await pool.execute(BEAT, "unwatched", 1)
        silent = await watch.silent(beats, attempts)
        # An agent still starting (no heartbeat yet) has five times the bound.
        assert list(silent) == ["silent"] and silent["silent"] > BOUND
        await past_the_bound()
        # The same heartbeat read again is no new sign of life.
        assert sorted(await watch.silent(beats, attempts)) == ["beating", "silent"]
        await pool.execute(BEAT, "silent", 1)  # an earlier attempt's heartbeat does not count
        await asyncio.sleep(BOUND * 4)
        found = await watch.silent(beats, attempts)
        assert sorted(found) == ["beating", "silent", "starting"] and found["starting"] > BOUND * 5
        watch.ended("silent", 2)
        watch.ended("starting", 1)
        await pool.execute(BEAT, "beating", 1)
        assert await watch.silent(beats, attempts) == {}
    finally:
        await store.close()


async def test_a_time_the_heartbeats_could_not_be_read_is_not_held_against_an_agent(
    dsn: str,
) -> None:
    store = await PostgresEventStore.connect(dsn, min_size=1, max_size=1)
    pool, beats = store.pool, Heartbeats(store)
    try:
        watch = HeartbeatWatch(BOUND)
        watch.started("r", 1)
        await pool.execute(BEAT, "r", 1)
        assert await watch.silent(beats, {"r": 1}) == {}
        broken = await PostgresEventStore.connect(dsn, min_size=1, max_size=1)
        await broken.pool.close()  # Postgres away, as the worker sees it
        with pytest.raises(asyncpg.InterfaceError):
            await watch.silent(Heartbeats(broken), {"r": 1})
        await broken.close()
        await past_the_bound()
        # Back: the agent gets the whole bound again to be heard (its API was away too).
        assert await watch.silent(beats, {"r": 1}) == {}
        await past_the_bound()
        assert list(await watch.silent(beats, {"r": 1})) == ["r"]
    finally:
        await store.close()
