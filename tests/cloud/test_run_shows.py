"""What a run shows (issue 19), with a real server, worker and process runtime: tool calls
under the model step that asked for them, a replay's whole timeline with its original step
numbers, and the agent's own output between its steps in ``papayya runs logs``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from papayya.domain import events as ev
from tests.support.agents import AGENT
from tests.support.cloud import Cloud, running_cloud
from tests.support.gateway import PROVIDER_KEY

pytestmark = pytest.mark.timeout(120)

# The README tour's agent, as written there.
TOUR = '''
from openai import OpenAI
from papayya import agent, current_run, tool

@tool
def lookup(city: str) -> dict:
    """Look up the weather of a city."""
    return {"city": city, "temp": 21}

@agent
def weather(task):
    client = OpenAI()
    first = client.chat.completions.create(model="gpt-4o", tools=[lookup.schema()],
        messages=[{"role": "user", "content": task["question"]}])
    city = current_run().task("pick", lambda: "Paris")
    return {"weather": lookup(city=city)}
'''

SECRET = "project-secret-value-" + "z" * 16
# Prints to stdout, to stderr through logging, inside and between its steps, its whole
# environment and a project secret, then fails. The pauses keep each line's read time clear
# of the step it is written beside.
LOUD = """
import logging, os, time
from papayya import agent, current_run

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

@agent
def loud(task):
    print("starting", flush=True)
    def work():
        print("inside the task", flush=True)
        time.sleep(0.5)
        return 1
    current_run().task("work", work)
    time.sleep(0.5)
    logging.getLogger("loud").warning("a logged warning")
    print("token " + os.environ.get("API_TOKEN", "none"), flush=True)
    print("env " + " ".join(f"{k}={v}" for k, v in os.environ.items()), flush=True)
    time.sleep(0.5)
    raise RuntimeError("the agent gave up")
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


async def cli(cloud: Cloud, *args: str) -> list[str]:
    env = {**os.environ, "PAPAYYA_BASE_URL": cloud.url, "PAPAYYA_API_KEY": cloud.key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode()
    return out.decode().splitlines()


async def steps_of(cloud: Cloud, run_id: str) -> list[dict[str, Any]]:
    status, steps = await cloud.call("GET", f"/v1/runs/{run_id}/steps")
    assert status == 200, steps
    return list(steps)


def index(lines: list[str], text: str) -> int:
    found = [i for i, line in enumerate(lines) if text in line]
    assert len(found) == 1, (text, lines)
    return found[0]


async def test_the_tours_tool_call_is_under_the_model_step_that_asked_for_it(cloud: Cloud) -> None:
    await cloud.register("weather", TOUR)
    run = await cloud.wait(await cloud.start("weather", input={"question": "weather?"}))
    assert run.status == "completed", (run.error_code, run.error_message)
    steps = await steps_of(cloud, run.run_id)
    assert [s["step_type"] for s in steps] == ["tool_call", "checkpoint"]
    # The model asked for lookup (with arguments of its own); the agent ran it after the
    # checkpoint: it belongs to the model's step all the same.
    assert [[c["tool"] for c in s["tool_calls"]] for s in steps] == [["lookup"], []]
    assert steps[0]["tool_calls"][0]["input"] == {"city": "Paris"}
    status, detail = await cloud.call("GET", f"/v1/runs/{run.run_id}/steps/0")
    assert status == 200 and [c["tool"] for c in detail["tool_calls"]] == ["lookup"]
    status, detail = await cloud.call("GET", f"/v1/runs/{run.run_id}/steps/1")
    assert status == 200 and detail["tool_calls"] == []

    shown = await cli(cloud, "runs", "show", run.run_id)
    model, tool, task = (index(shown, t) for t in ("gpt-4o", "tool lookup", "pick"))
    assert model < tool < task and '{"city":"Paris"}' in shown[tool]


async def test_a_replay_shows_every_step_with_its_number_the_recorded_ones_marked(
    cloud: Cloud,
) -> None:
    await cloud.register("weather", AGENT)
    source = await cloud.wait(await cloud.start("weather", input={"question": "in Oslo?"}))
    assert source.status == "completed", (source.error_code, source.error_message)
    assert cloud.fake.stats.total == 2 and len(cloud.side_effects()) == 1

    status, body = await cloud.call("POST", f"/v1/runs/{source.run_id}/replay", {"from_step": 2})
    assert status in (200, 201), body
    replay = await cloud.wait(body["id"])
    assert replay.status == "completed", (replay.error_code, replay.error_message)
    steps = await steps_of(cloud, replay.run_id)
    assert [(s["step_number"], s["step_type"], s["replayed"]) for s in steps] == [
        (0, "tool_call", True),
        (1, "checkpoint", True),
        (2, "response", False),
    ]
    assert [c["tool"] for c in steps[0]["tool_calls"]] == ["lookup"]
    assert [Decimal(s["cost_usd"]) for s in steps][:2] == [0, 0] and Decimal(
        steps[2]["cost_usd"]
    ) > 0
    # Steps 0 and 1 were answered from the recording: one more model call, no tool run again.
    assert cloud.fake.stats.total == 3 and len(cloud.side_effects()) == 1
    assert replay.output["counted"] == source.output["counted"]
    # Time travel reads the replay as it reads its source.
    status, at = await cloud.call("GET", f"/v1/runs/{replay.run_id}/state?at_step=1")
    assert status == 200 and [s["output"] for s in at["steps"]][1] == source.steps[1].output

    shown = await cli(cloud, "runs", "show", replay.run_id)
    assert f"replay of {source.run_id} from step 2" in "\n".join(shown)
    assert "(recorded)" in shown[index(shown, "count")]
    assert "(recorded)" not in shown[-1]


async def test_runs_logs_interleaves_the_agents_output_with_its_steps_and_tells_the_error(
    cloud: Cloud,
) -> None:
    status, projects = await cloud.call("GET", "/v1/projects")
    assert status == 200
    secret = {"name": "API_TOKEN", "value": SECRET}
    assert (await cloud.call("POST", f"/v1/projects/{projects[0]['id']}/secrets", secret))[0] == 200
    await cloud.register("loud", LOUD)
    run = await cloud.wait(await cloud.start("loud"))
    assert run.status == "failed" and run.error_code == "agent_error"
    for _ in range(100):  # the worker records the output as the agent process exits
        status, logs = await cloud.call("GET", f"/v1/runs/{run.run_id}/logs")
        if logs.get("attempts") == [1]:
            break
        await asyncio.sleep(0.05)
    assert status == 200 and logs["attempts"] == [1] and logs["truncated"] is False
    texts = [line["text"] for line in logs["data"]]
    assert texts[:2] == ["starting", "inside the task"]
    assert "WARNING a logged warning" in texts and "token [redacted]" in texts

    stored = [e for e in await cloud.runs.events(run.run_id) if isinstance(e, ev.AgentOutput)]
    written = json.dumps([list(e.lines) for e in stored]) + json.dumps(logs)
    assert any(t.startswith("env ") and "PATH=" in t for t in texts)  # its environment, printed
    for hidden in (SECRET, cloud.key, PROVIDER_KEY):
        assert hidden not in written

    for follow in ((), ("-f",)):
        shown = await cli(cloud, "runs", "logs", run.run_id, *follow)
        last = f"run {run.run_id} failed (agent_error: RuntimeError: the agent gave up)"
        assert shown[-1] == last, shown
        # Each line where it was written: inside the task, before its step; -f on a run that
        # has ended prints the same.
        step, warning = index(shown, "checkpoint"), index(shown, "a logged warning")
        assert index(shown, "  | inside the task") < step < warning < index(shown, " error ")


async def test_runs_logs_of_another_projects_run_is_not_found(cloud: Cloud) -> None:
    await cloud.register("weather", TOUR)
    run = await cloud.wait(await cloud.start("weather", input={"question": "q"}))
    status, other = await cloud.call("POST", "/v1/projects", {"name": "other"})
    assert status == 201
    headers = {"X-Api-Key": other["api_key"]["key"]}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{cloud.url}/v1/runs/{run.run_id}/logs", headers=headers) as r,
    ):
        assert r.status == 404
        assert (await r.json())["error"]["code"]


async def test_runs_logs_follow_prints_the_steps_live_then_the_output_and_the_error(
    cloud: Cloud,
) -> None:
    await cloud.register("loud", LOUD)
    run_id = await cloud.start("loud")
    shown = await cli(cloud, "runs", "logs", run_id, "-f")  # started while the run runs
    assert shown[-1] == f"run {run_id} failed (agent_error: RuntimeError: the agent gave up)"
    assert "  | inside the task" in shown and "  | WARNING a logged warning" in shown
    assert any(line.startswith("step   0  checkpoint") for line in shown)
