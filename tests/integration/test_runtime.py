"""The in-container runtime as a real subprocess against a real server, Postgres and the fake
provider: agent code with the official ``openai`` SDK and no base URL of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakellm import FakeConfig, Usage
from papayya.commands.cancel import cancel_events
from papayya.domain import events as ev
from tests.support.agents import AGENT
from tests.support.gateway import Gateway, running_gateway
from web import keys

PROCESSES: list[asyncio.subprocess.Process] = []

FAILING = """
from papayya import agent

@agent
def broken(task):
    raise ValueError("the agent broke on " + str(task))
"""

SLOW = """
import os, time
from papayya import agent

@agent
def slow():
    open(os.environ["SIDE_EFFECTS"], "w").close()
    time.sleep(60)
"""


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    config = FakeConfig(usage=Usage(prompt_tokens=100, completion_tokens=20))
    async with running_gateway(dsn, monkeypatch, config) as gateway:
        yield gateway


async def run_runtime(
    gw: Gateway, tmp_path: Path, source: str, token: str, **env: str
) -> tuple[int, str]:
    module = tmp_path / "agent_module.py"
    module.write_text(source)
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    full |= {
        "PAPAYYA_RUNTIME_URL": gw.api.url,
        "PAPAYYA_RUN_TOKEN": token,
        "PAPAYYA_AGENT_MODULE": str(module),
        "SIDE_EFFECTS": str(tmp_path / "side_effects.txt"),
        "PYTHONPATH": str(Path(__file__).parents[2]),
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "papayya.runtime", env=full, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    PROCESSES.append(process)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_agent_with_a_tool_completes_with_steps_tokens_and_tool_call(
    gw: Gateway, tmp_path: Path
) -> None:
    state, token = await gw.start_run(input={"question": "weather in Paris?"})
    code, out = await run_runtime(gw, tmp_path, AGENT, token)
    assert code == 0, out
    run = await gw.runs.load(state.run_id)
    assert run.status == "completed"
    assert run.output == {"answer": run.output["answer"], "counted": 3} and run.output["answer"]
    kinds = [s.step_type for s in run.steps]
    assert kinds == ["tool_call", "checkpoint", "response"]
    first = run.steps[0]
    assert first.model == "gpt-4o" and first.usage.output_tokens == 20
    assert first.usage.cost_micro_usd > 0
    (call,) = first.tool_calls
    assert call.tool == "lookup" and set(call.input) == {"city"}
    assert call.output == {"city": call.input["city"], "temp": 21}
    assert (tmp_path / "side_effects.txt").read_text().count("\n") == 1
    assert gw.fake.stats.total == 2


async def test_a_resumed_attempt_answers_finished_calls_from_the_recording(
    gw: Gateway, tmp_path: Path
) -> None:
    state, token = await gw.start_run(input={"question": "weather in Oslo?"})
    code, _ = await run_runtime(gw, tmp_path, AGENT, token, CRASH_BEFORE_ANSWER="1")
    assert code == 3 and gw.fake.stats.total == 1
    state = await gw.runs.load(state.run_id)
    await gw.runs.append(state, [ev.RunStarted(attempt=2)])
    code, out = await run_runtime(gw, tmp_path, AGENT, gw.token(state.run_id, 2))
    assert code == 0, out
    assert gw.fake.stats.total == 2  # only the model call never answered went out
    assert (tmp_path / "side_effects.txt").read_text().count("\n") == 1  # the tool did not rerun
    run = await gw.runs.load(state.run_id)
    assert run.status == "completed" and run.output["counted"] == 3
    assert [s.step_type for s in run.steps][-1] == "response"


async def test_a_failing_agent_fails_the_run_with_its_traceback(
    gw: Gateway, tmp_path: Path
) -> None:
    state, token = await gw.start_run(input="x")
    code, _ = await run_runtime(gw, tmp_path, FAILING, token)
    assert code == 1
    run = await gw.runs.load(state.run_id)
    assert run.status == "failed" and run.error_code == "agent_error"
    step = run.steps[-1]
    assert step.step_type == "error" and step.status == "failed"
    assert "Traceback" in (step.error_message or "") and "the agent broke on x" in (
        step.error_message or ""
    )


async def test_bad_input_is_4xx_json_and_a_bad_token_401(gw: Gateway) -> None:
    state, token = await gw.start_run()
    url = f"{gw.api.url}/v1/runtime"
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:

        async def post(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(f"{url}/{path}", json=body, headers=headers) as r:
                return r.status, await r.json()

        status, body = await post("tool-calls", {"nope": 1}, auth)
        assert status == 400 and "error" in body
        status, body = await post("fail", {"message": "no type"}, auth)
        assert status == 400 and "error" in body
        status, body = await post("heartbeat", {}, {"Authorization": "Bearer forged"})
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, body = await post("heartbeat", {}, auth)
        assert status == 200 and body["cancel_requested"] is False
        pool = gw.api.app[keys.STORE].pool
        row = await pool.fetchrow(
            "SELECT attempt FROM run_heartbeats WHERE run_id=$1", state.run_id
        )
        assert row is not None and row["attempt"] == 1
        async with http.get(f"{gw.api.url}/openapi.json") as r:
            paths = (await r.json())["paths"]
        assert {"/v1/runtime/tool-calls", "/v1/runtime/tasks/result", "/v1/runtime/fail"} <= set(
            paths
        )
        async with http.get(f"{url}/run", headers=auth) as r:
            assert r.status == 200 and (await r.json())["run_id"] == state.run_id
        status, _ = await post("complete", {"output": 1}, auth)
        assert status == 200
        status, _ = await post("heartbeat", {}, auth)  # the run is over: the token is spent
        assert status == 401


async def test_sigterm_stops_the_agent_and_exits_non_zero(gw: Gateway, tmp_path: Path) -> None:
    state, token = await gw.start_run()
    task = asyncio.create_task(run_runtime(gw, tmp_path, SLOW, token))
    started = tmp_path / "side_effects.txt"
    for _ in range(200):
        if started.exists():
            break
        await asyncio.sleep(0.05)
    os.kill(PROCESSES[-1].pid, signal.SIGTERM)
    code, _ = await asyncio.wait_for(task, 5)
    assert code == 143
    assert (await gw.runs.load(state.run_id)).status == "running"  # the worker records it


async def test_a_cancel_request_stops_the_agent_at_its_next_heartbeat(
    gw: Gateway, tmp_path: Path
) -> None:
    state, token = await gw.start_run()
    env = {"PAPAYYA_HEARTBEAT_SECONDS": "0.1"}
    task = asyncio.create_task(run_runtime(gw, tmp_path, SLOW, token, **env))
    started = tmp_path / "side_effects.txt"
    for _ in range(200):
        if started.exists():
            break
        await asyncio.sleep(0.05)
    state = await gw.runs.load(state.run_id)
    await gw.runs.append(state, cancel_events(state, "test"))
    code, _ = await asyncio.wait_for(task, 5)
    assert code == 143
