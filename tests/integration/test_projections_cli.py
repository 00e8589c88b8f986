"""``papayya projections status|rebuild`` and ``papayya projector``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner, Result

from eventstore import PostgresEventStore
from projections import Projections
from server.cli_projections import projections
from tests.support.projections import append_run, simple_run, snapshot

ROOT = Path(__file__).resolve().parents[2]


async def invoke(dsn: str, *args: str) -> Result:
    # In a thread: the command runs its own event loop with asyncio.run.
    runner = CliRunner()
    env = {"PAPAYYA_DATABASE_URL": dsn}
    return await asyncio.to_thread(runner.invoke, projections, list(args), env=env)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.05)
    yield store
    await store.close()


async def test_status_shows_checkpoints_and_lag(store: PostgresEventStore, dsn: str) -> None:
    await append_run(store, "a", simple_run("a", calls=1))
    await asyncio.sleep(0.01)  # so that the pending run's age shows in three decimals
    result = await invoke(dsn, "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["runs", "costs"]
    assert "never" in lines[0] and "lag 0.000s" not in lines[0]  # behind: one run pending
    await Projections(store, dsn).catch_up()
    result = await invoke(dsn, "status")
    assert all("lag 0.000s" in line for line in result.output.splitlines())


async def test_rebuild_one_all_and_unknown(store: PostgresEventStore, dsn: str) -> None:
    await append_run(store, "a", simple_run("a", calls=2))
    result = await invoke(dsn, "rebuild", "costs")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("rebuilt costs: 7 events, checkpoint c")
    result = await invoke(dsn, "rebuild")
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines()] == ["runs:", "costs:"]
    assert (await snapshot(dsn))["runs"][0]["status"] == "completed"
    result = await invoke(dsn, "rebuild", "nope")
    assert result.exit_code != 0
    assert "'nope' is not one of 'runs', 'costs'" in result.output


async def test_cli_reports_an_unmigrated_database_clearly(empty_dsn: str) -> None:
    result = await invoke(empty_dsn, "status")
    assert result.exit_code == 1
    assert "papayya db migrate" in result.output


async def test_projector_runs_until_sigterm(store: PostgresEventStore, dsn: str) -> None:
    env = {**os.environ, "PAPAYYA_DATABASE_URL": dsn}
    code = "from server.cli_projections import projector; projector()"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"projecting runs, costs")
        await append_run(store, "a", simple_run("a", calls=1))
        conn = await asyncpg.connect(dsn)
        try:
            for _ in range(500):
                if await conn.fetchval("SELECT status FROM runs WHERE run_id = 'a'"):
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the projector did not project the run")
        finally:
            await conn.close()
        proc.send_signal(signal.SIGTERM)
        output = await asyncio.wait_for(proc.stdout.read(), 15)
        assert await proc.wait() == 0, output
        assert b"projector stopped" in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
