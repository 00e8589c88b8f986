"""The local path as a user runs it: an agent script in a process of its own (the research
agent of ``examples/local``), against a real server or database and the fake provider."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from fakellm import FakeConfig, Usage
from tests.support.api import Api
from tests.support.gateway import Gateway, running_gateway
from tests.support.localpath import (
    CANCELLABLE,
    RESEARCH_AGENT,
    TWO_CALLS,
    read_until,
    readme_local_sample,
    run_script,
    script_env,
    start,
    write_script,
)
from tests.support.runs import project_everything
from web import keys
from workers.queue import RunQueue, connect
from workers.sweeper import Sweeper

REDIS_URL = os.environ.get("PAPAYYA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

USAGE = Usage(prompt_tokens=120, completion_tokens=30)


def mode_env(gw: Gateway, dsn: str, mode: str, **more: str) -> dict[str, str]:
    """A script's environment in ``mode``: no provider key of its own in either."""
    if mode == "http":
        return script_env(PAPAYYA_BASE_URL=gw.api.url, PAPAYYA_API_KEY=gw.api.key, **more)
    return script_env(PAPAYYA_DATABASE_URL=dsn, **more)


async def api_id(gw: Gateway, mode: str, run_id: str) -> str:
    """The run's id in ``/v1/runs``: HTTP mode scopes the client's id to its project."""
    return f"{await gw.project_id()}:{run_id}" if mode == "http" else run_id


async def get(api: Api, http: Any, path: str) -> Any:
    async with http.get(api.url + path, headers=api.headers()) as r:
        assert r.status == 200, await r.text()
        return await r.json()


@pytest.mark.parametrize("mode", ["direct", "http"])
async def test_the_research_agent_is_checkpointed_and_metered(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any, mode: str
) -> None:
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:
        env = mode_env(gw, dsn, mode)
        code, out, err = await run_script(RESEARCH_AGENT, "research-1", "tides", env=env)
        assert (code, err) == (0, ""), out  # -W error: not a warning on the way out either
        assert "done research-1" in out
        run_id = await api_id(gw, mode, "research-1")
        run = await get(gw.api, http, f"/v1/runs/{run_id}")
        assert run["status"] == "completed" and run["project_id"] == await gw.project_id()
        steps = await get(gw.api, http, f"/v1/runs/{run_id}/steps")
        assert [(s["step_type"], s["label"] or s["model"]) for s in steps] == [
            ("checkpoint", "search"),
            ("response", "gpt-4o-mini"),
            ("checkpoint", "report"),
        ]
        call = steps[1]
        assert (call["input_tokens"], call["output_tokens"]) == (120, 30)
        assert float(call["cost_usd"]) > 0
        assert steps[2]["output"]["topic"] == "tides"
        assert gw.fake.stats.total == 1


@pytest.mark.parametrize("mode", ["direct", "http"])
async def test_a_killed_run_resumes_without_repeating_finished_work(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    log = tmp_path / "tasks.log"
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:
        env = mode_env(gw, dsn, mode, RESEARCH_LOG=str(log), RESEARCH_PAUSE_SECONDS="600")
        proc = await start(RESEARCH_AGENT, "crash-1", env=env)
        await read_until(proc, "summarised crash-1")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        assert log.read_text().split() == ["search"]
        assert gw.fake.stats.total == 1

        env["RESEARCH_PAUSE_SECONDS"] = "0"
        code, out, err = await run_script(RESEARCH_AGENT, "crash-1", env=env)
        assert (code, err) == (0, ""), out
        assert log.read_text().split() == ["search", "report"]  # search was not run again
        assert gw.fake.stats.total == 1  # nor the model call: answered from the recording
        state = await gw.runs.load(await api_id(gw, mode, "crash-1"))
        assert state.status == "completed" and state.attempt == 2


async def killed(gw: Gateway, env: dict[str, str], run_id: str) -> None:
    """Start the research agent as ``run_id`` and SIGKILL it halfway."""
    proc = await start(RESEARCH_AGENT, run_id, env={**env, "RESEARCH_PAUSE_SECONDS": "600"})
    await read_until(proc, f"summarised {run_id}")
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def test_a_killed_run_shows_no_heartbeat_and_ends_cancelled_or_abandoned(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any
) -> None:
    monkeypatch.setenv("PAPAYYA_LEASE_SECONDS", "0.5")
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:
        env = mode_env(gw, dsn, "http")
        await killed(gw, env, "gone-1")
        run_id = await api_id(gw, "http", "gone-1")
        run: dict[str, Any] = {}
        for _ in range(200):  # until a lease time has passed since its last heartbeat
            run = await get(gw.api, http, f"/v1/runs/{run_id}")
            if run["no_heartbeat_since"]:
                break
            await asyncio.sleep(0.05)
        assert run["status"] == "running" and run["no_heartbeat_since"]
        async with http.post(
            f"{gw.api.url}/v1/runs/{run_id}/cancel", json={}, headers=gw.api.headers()
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["status"] == "cancelled"  # nobody to hear it: at once

        await killed(gw, env, "gone-2")
        sweeper = Sweeper(gw.api.app[keys.STORE], RunQueue(connect(REDIS_URL)), abandon_after=0.5)
        gone = await api_id(gw, "http", "gone-2")
        try:
            for _ in range(200):
                if await sweeper.abandon_silent():
                    break
                await asyncio.sleep(0.05)
        finally:
            await sweeper.queue.redis.aclose()
        state = await gw.runs.load(gone)
        assert (state.status, state.error_code) == ("failed", "abandoned")
        assert (await gw.runs.load(run_id)).status == "cancelled"  # ended runs stay as they are


@pytest.mark.parametrize("mode", ["direct", "http"])
async def test_cancelling_a_live_run_raises_run_cancelled_in_its_code(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any, tmp_path: Path, mode: str
) -> None:
    script = write_script(tmp_path, "cancellable.py", CANCELLABLE)
    async with running_gateway(dsn, monkeypatch) as gw:
        env = mode_env(gw, dsn, mode, PAPAYYA_HEARTBEAT_SECONDS="0.2")
        proc = await start(script, "live-1", env=env)
        await read_until(proc, "started")
        run_id = await api_id(gw, mode, "live-1")
        async with http.post(
            f"{gw.api.url}/v1/runs/{run_id}/cancel", json={}, headers=gw.api.headers()
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["status"] == "running"  # alive: asked to stop
        await read_until(proc, "cancelled")
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert (proc.returncode, err.decode()) == (0, "")
        assert (await gw.runs.load(run_id)).status == "cancelled"


@pytest.mark.parametrize("mode", ["direct", "http"])
async def test_a_budget_too_small_for_the_second_call_refuses_it_with_402(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    script = write_script(tmp_path, "two_calls.py", TWO_CALLS)
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:
        code, out, err = await run_script(script, "tight-1", env=mode_env(gw, dsn, mode))
        assert (code, err) == (0, ""), out
        assert out.split("\n")[:2] == ["first call", "refused 402"]
        assert gw.fake.stats.total == 1  # the refused call was never sent
        state = await gw.runs.load(await api_id(gw, mode, "tight-1"))
        assert state.status == "budget_exceeded"


@pytest.mark.parametrize("mode", ["direct", "http"])
async def test_the_readme_local_sample_works_as_written(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any, tmp_path: Path, mode: str
) -> None:
    script = write_script(tmp_path, "sample.py", readme_local_sample())
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:
        code, out, err = await run_script(script, env=mode_env(gw, dsn, mode))
        assert (code, out, err) == (0, "", "")
        run_id = await api_id(gw, mode, "demo-1")
        assert (await get(gw.api, http, f"/v1/runs/{run_id}"))["status"] == "completed"
        steps = await get(gw.api, http, f"/v1/runs/{run_id}/steps")
        assert [(s["step_type"], s["status"]) for s in steps] == [
            ("checkpoint", "completed"),
            ("checkpoint", "completed"),
            ("response", "completed"),
        ]
        assert [s["output"] for s in steps[:2]] == [{"hits": 7}, "7 hits"]  # len("papayya")
        assert steps[2]["input_tokens"] == 120 and float(steps[2]["cost_usd"]) > 0

        code, out, err = await run_script(script, env=mode_env(gw, dsn, mode))
        assert (code, err) == (0, ""), err
        assert gw.fake.stats.total == 1  # run again: answered from the recording


async def test_runs_list_shows_the_same_runs_from_the_database_and_the_api(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any
) -> None:
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:
        for mode in ("direct", "http"):
            code, out, err = await run_script(
                RESEARCH_AGENT, f"listed-{mode}", env=mode_env(gw, dsn, mode)
            )
            assert (code, err) == (0, ""), out
        expected = {"listed-direct", await api_id(gw, "http", "listed-http")}
        listed: dict[str, set[str]] = {}
        for mode in ("direct", "http"):
            for _ in range(100):  # the API lists from a read model that catches up
                await project_everything(gw.api.app[keys.STORE], dsn)
                code, out, err = await run_script(
                    "-m", "server.cli", "runs", "list", env=mode_env(gw, dsn, mode)
                )
                assert code == 0, err
                listed[mode] = {w for w in out.split() if w.startswith(("listed-", "proj"))}
                if listed[mode] >= expected:
                    break
                await asyncio.sleep(0.1)
        assert listed["direct"] == listed["http"] == expected
