"""The CLI through the API, as a user types it: agents, run --wait, runs list/show/cancel/
replay/logs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from papayya.domain import events as ev
from tests.support.api import Api, running_api
from web import keys


async def cli(api: Api, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(PAPAYYA_BASE_URL=api.url, PAPAYYA_API_KEY=api.key)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_agents_run_wait_and_runs_commands(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_api(dsn, monkeypatch, projectors=True) as api:
        code, out, err = await cli(api, "agents", "create", "--name", "Researcher",
                                   "--slug", "researcher", "--budget-usd", "0.50")  # fmt: skip
        assert code == 0, err
        agent = json.loads(out)
        code, out, _ = await cli(api, "agents", "list")
        assert "researcher" in out
        code, out, _ = await cli(api, "agents", "get", "researcher")
        assert json.loads(out)["id"] == agent["id"]

        waiting = asyncio.create_task(
            cli(api, "run", "researcher", "--input", '{"q": 1}', "--wait")
        )
        run_id = await _first_run(api)
        await _finish(api, run_id)
        code, out, err = await waiting
        assert code == 0, err
        assert out.splitlines()[0] == run_id
        assert "step   0" in out and f"run {run_id} completed" in out

        for _ in range(100):  # the list comes from the server's projector
            code, out, _ = await cli(api, "runs", "list", "--status", "completed")
            if run_id in out:
                break
            await asyncio.sleep(0.1)
        assert run_id in out
        code, out, _ = await cli(api, "runs", "show", run_id)
        assert code == 0 and "completed" in out and "fetch" in out
        code, out, _ = await cli(api, "runs", "logs", run_id)
        assert "fetch" in out
        code, out, _ = await cli(api, "runs", "replay", run_id, "--from-step", "1")
        replay_id = out.strip()
        assert code == 0 and replay_id.startswith("run_")
        code, out, _ = await cli(api, "runs", "cancel", replay_id)
        assert code == 0 and "cancelled" in out
        code, _, err = await cli(api, "runs", "cancel", replay_id)
        assert code == 1 and "cancelled" in err


async def test_cli_errors_are_clear(api: Api) -> None:
    code, _, err = await cli(api, "runs", "show", "run_missing")
    assert code == 1 and "not found" in err and "Traceback" not in err
    code, _, err = await cli(api, "agents", "create", "--name", "x", "--slug", "Bad Slug!")
    assert code == 1 and "Traceback" not in err
    bad_key = Api(api.url, "cpk_not_a_real_key_000000", api.app)
    code, _, err = await cli(bad_key, "agents", "list")
    assert code == 1 and "API key" in err


async def _first_run(api: Api) -> str:
    store = api.app[keys.STORE]
    for _ in range(300):
        found = await store.summaries("run")
        if found:
            return str(found[0][2]["run_id"])
        await asyncio.sleep(0.05)
    raise AssertionError("papayya run created no run")


async def _finish(api: Api, run_id: str) -> None:
    """Play the worker's part: start the run, record a step, complete it."""
    runs = api.app[keys.RUNS]
    state = await runs.load(run_id)
    steps: list[Any] = [
        ev.RunStarted(attempt=1),
        ev.StepStarted(step_number=0, step_type="checkpoint", label="fetch"),
        ev.CheckpointSaved(step_number=0, label="fetch", fingerprint="f", result=1),
        ev.StepCompleted(step_number=0, duration_ms=3.0),
    ]
    state = await runs.append(state, steps)
    await asyncio.sleep(0.3)
    await runs.append(state, [ev.RunCompleted(output="done")])


async def test_time_limits_from_the_cli(api: Api) -> None:
    code, out, err = await cli(api, "agents", "create", "--name", "Timed", "--slug", "timed",
                               "--timeout", "120")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["config"]["timeout_seconds"] == 120
    code, out, err = await cli(api, "run", "timed", "--timeout", "30")
    assert code == 0, err
    run = await api.app[keys.RUNS].load(out.strip())
    assert run.timeout_seconds == 30
    code, out, err = await cli(api, "run", "timed")
    assert code == 0 and (await api.app[keys.RUNS].load(out.strip())).timeout_seconds == 120
    before = len(await api.app[keys.STORE].summaries("run"))
    for bad in ("0", "604801", "soon"):
        code, _, err = await cli(api, "run", "timed", "--timeout", bad)
        assert code == 2 and "--timeout" in err and "Traceback" not in err
    assert len(await api.app[keys.STORE].summaries("run")) == before
