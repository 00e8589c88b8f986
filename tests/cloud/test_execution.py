"""Cloud execution end to end: API trigger → dispatcher → Redis → worker → agent process
(official ``openai`` SDK, no base URL of its own) → gateway → fake provider."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakellm import FakeConfig, Usage
from papayya.domain import events as ev
from tests.support.agents import AGENT
from tests.support.cloud import Cloud, running_cloud

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    config = FakeConfig(usage=Usage(prompt_tokens=100, completion_tokens=20))
    async with running_cloud(dsn, monkeypatch, tmp_path, config) as running:
        yield running


async def test_a_queued_run_is_executed_with_steps_tool_calls_tokens_and_cost(
    cloud: Cloud,
) -> None:
    await cloud.register("weather", AGENT)
    run_id = await cloud.start("weather", input={"question": "weather in Paris?"})
    run = await cloud.wait(run_id)
    assert run.status == "completed", (run.error_code, run.error_message)
    assert run.attempt == 1 and run.output["counted"] == 3
    assert [s.step_type for s in run.steps] == ["tool_call", "checkpoint", "response"]
    (call,) = run.steps[0].tool_calls
    assert call.tool == "lookup" and call.output == {"city": call.input["city"], "temp": 21}
    assert run.usage.output_tokens == 40 and run.usage.cost_micro_usd > 0
    assert cloud.side_effects() == [call.input["city"]]
    assert cloud.fake.stats.total == 2
    status, body = await cloud.call("GET", f"/v1/runs/{run_id}")
    assert status == 200 and body["status"] == "completed" and body["deployment_version"] == "1"


async def test_papayya_run_wait_shows_the_run_live(cloud: Cloud) -> None:
    await cloud.register("weather", AGENT)
    env = {**os.environ, "PAPAYYA_BASE_URL": cloud.url, "PAPAYYA_API_KEY": cloud.key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "run", "weather", "--wait",
        "--input", '{"question": "weather in Rome?"}', env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("run_")
    assert any("tool_call" in line for line in lines) and "completed" in lines[-1]


async def test_a_run_of_an_agent_without_deployment_fails_clearly(cloud: Cloud) -> None:
    status, _ = await cloud.call("POST", "/v1/agents", {"name": "n", "slug": "bare", "config": {}})
    assert status == 201
    run = await cloud.wait(await cloud.start("bare"))
    assert run.status == "failed" and run.error_code == "no_deployment"
    assert "papayya agents register" in (run.error_message or "")


CHATTY = """
import sys, time
from papayya import agent, current_run

@agent
def chatty(task):
    def work():
        print("working on", task, flush=True)
        print("a warning", file=sys.stderr, flush=True)
        time.sleep(0.3)
        return 1
    current_run().task("work", work)
    time.sleep(3)
    print("after the step", flush=True)
    return "done"
"""


async def test_the_agents_output_is_kept_and_shown_around_its_step(cloud: Cloud) -> None:
    await cloud.register("chatty", CHATTY)
    run_id = await cloud.wait(await cloud.start("chatty", input="x"))
    assert run_id.status == "completed"
    for _ in range(100):  # the worker records the rest of the output once the process exited
        events = await cloud.runs.events(run_id.run_id)
        found = [e for e in events if isinstance(e, ev.AgentOutput)]
        if any(e.final for e in found):
            break
        await asyncio.sleep(0.05)
    assert found[-1].final  # one final event per attempt, after any recorded while it ran
    texts = [text for output in found for _, text in output.lines]
    assert "working on x" in texts and "a warning" in texts and "after the step" in texts
    status, step = await cloud.call("GET", f"/v1/runs/{run_id.run_id}/steps/0")
    assert status == 200, step
    shown = [line["text"] for line in step["log"]]
    assert "working on x" in shown and "a warning" in shown
    assert "after the step" not in shown  # written 3 s after the step ended
