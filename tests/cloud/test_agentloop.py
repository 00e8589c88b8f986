"""The built-in agent loop (issue 17) end to end: a worker runs an agent made of
configuration alone against the fake provider, with real HTTP and MCP tool servers."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fakellm import FakeConfig, Latency, Reply, ToolCall
from papayya.readmodels.secrets import Secrets
from papayya.signing import sign
from tests.support.agentloop import running_http_tool, running_mcp_server
from tests.support.cloud import Cloud, running_cloud
from web import keys

pytestmark = pytest.mark.timeout(120)

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as c:
        yield c


def weather_tool(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "weather", "description": "Today's weather", "parameters": CITY, "url": url,
            **extra}  # fmt: skip


async def make_agent(cloud: Cloud, slug: str, **config: Any) -> None:
    body = {"name": slug, "slug": slug, "config": {"model": "gpt-4o-mini", **config}}
    status, created = await cloud.call("POST", "/v1/agents", body)
    assert status == 201, created


async def test_a_weather_agent_calls_an_http_and_an_mcp_tool_and_answers(cloud: Cloud) -> None:
    async with running_http_tool() as tool, running_mcp_server() as mcp:
        await make_agent(
            cloud, "weather", instructions="You report the weather.",
            tools=[weather_tool(tool.url)],
            mcp_servers=[{"url": mcp.url, "allowed_tools": ["forecast"]}],
        )  # fmt: skip
        cloud.fake.script.extend([
            Reply(tool_calls=[ToolCall("weather", {"city": "Paris"})]),
            Reply(tool_calls=[ToolCall("forecast", {"city": "Paris"})]),
            Reply(text="Sunny today, rain tomorrow."),
        ])  # fmt: skip
        run = await cloud.wait(await cloud.start("weather", input="Weather in Paris?"))
    assert run.status == "completed", (run.error_code, run.error_message)
    assert run.output == "Sunny today, rain tomorrow."
    assert [s.step_type for s in run.steps] == ["tool_call", "tool_call", "response"]
    first, second, _ = run.steps
    [http_call] = first.tool_calls
    assert http_call.tool == "weather" and http_call.input == {"city": "Paris"}
    assert http_call.output == {"city": "Paris", "sky": "sunny", "celsius": 21}
    [mcp_call] = second.tool_calls
    logs = [e for e in await cloud.runs.events(run.run_id) if type(e).__name__ == "AgentOutput"]
    assert mcp_call.error is None, logs
    assert mcp_call.tool == "forecast" and mcp_call.output == "Tomorrow in Paris: rain, 14 C"
    assert mcp.calls == [("forecast", "Paris")]
    assert run.usage.input_tokens > 0 and run.usage.cost_micro_usd > 0 and run.llm_calls == 3
    # The tool got the arguments signed with the project's callback secret.
    [(headers, body)] = tool.received
    assert body == {"city": "Paris"}
    secret = await Secrets(cloud.app[keys.STORE]).callbacks(run.project_id)
    raw = b'{"city": "Paris"}'
    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), raw)
    assert headers["webhook-signature"] == expected
    # The model saw the instructions, the offered tools (the allow-list kept "secret" out)
    # and the tool results.
    requests = list(cloud.fake.stats.requests)[-3:]
    last = requests[-1].body
    assert last["messages"][0] == {"role": "system", "content": "You report the weather."}
    assert [t["function"]["name"] for t in last["tools"]] == ["weather", "forecast"]
    results = [m["content"] for m in last["messages"] if m["role"] == "tool"]
    assert results == ['{"celsius": 21, "city": "Paris", "sky": "sunny"}',
                       "Tomorrow in Paris: rain, 14 C"]  # fmt: skip


def cities(*names: str) -> list[Reply]:
    return [Reply(tool_calls=[ToolCall("weather", {"city": n})]) for n in names]


async def test_a_replay_from_step_3_with_other_instructions_calls_the_provider_from_there(
    cloud: Cloud,
) -> None:
    async with running_http_tool() as tool:
        await make_agent(cloud, "replayable", instructions="Be brief.",
                         tools=[weather_tool(tool.url)])  # fmt: skip
        cloud.fake.script.extend([*cities("Paris", "Rome", "Oslo", "Bern"), Reply(text="done")])
        source = await cloud.wait(await cloud.start("replayable", input="Tour the weather"))
        assert source.status == "completed" and len(source.steps) == 5
        before, told = cloud.fake.stats.total, len(tool.received)
        cloud.fake.script.extend([*cities("Lyon"), Reply(text="fini")])
        status, body = await cloud.call(
            "POST", f"/v1/runs/{source.run_id}/replay",
            {"from_step": 3, "system_prompt": "Answer in French."},
        )  # fmt: skip
        assert status == 201, body
        replay = await cloud.wait(body["id"])
    assert replay.status == "completed" and replay.output == "fini"
    # Steps 0-2 came from the recording: no provider call, no tool call, no cost.
    assert cloud.fake.stats.total == before + 2
    assert tool.bodies()[told:] == [{"city": "Lyon"}]
    assert [s.usage.cost_micro_usd == 0 for s in replay.steps] == [True] * 3 + [False] * 2
    assert [len(s.tool_calls) for s in replay.steps] == [1, 1, 1, 1, 0]
    for request in list(cloud.fake.stats.requests)[-2:]:
        assert request.body["messages"][0] == {"role": "system", "content": "Answer in French."}
    # The source is untouched.
    assert (await cloud.runs.load(source.run_id)).steps == source.steps
    # Another model from step 4: only step 4 reaches the provider, with that model.
    cloud.fake.script.append(Reply(text="ok"))
    status, body = await cloud.call(
        "POST", f"/v1/runs/{source.run_id}/replay", {"from_step": 4, "model": "gpt-4o"}
    )
    assert status == 201, body
    other = await cloud.wait(body["id"])
    assert other.status == "completed" and other.output == "ok"
    assert [s.model for s in other.steps] == ["gpt-4o-mini"] * 4 + ["gpt-4o"]
    assert cloud.fake.stats.total == before + 3 and cloud.fake.stats.last is not None
    assert cloud.fake.stats.last.body["model"] == "gpt-4o"


async def test_a_killed_worker_resumes_on_another_without_repeating_finished_calls(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kill_at = random.randrange(5)  # the tool call in flight when the worker dies
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as cloud:
        env = {
            "PAPAYYA_OPENAI_BASE_URL": cloud.fake.openai_base_url,
            "PAPAYYA_OPENAI_API_KEY": "sk-test",
            "PAPAYYA_CALLBACK_ALLOW_PRIVATE": "1",
        }
        entered = asyncio.Event()
        release = asyncio.Event()

        async def answer(body: Any) -> web.StreamResponse:
            if len(tool.received) == kill_at + 1 and not release.is_set():
                entered.set()
                await release.wait()
            return web.json_response({"city": body["city"], "sky": "grey"})

        async with running_http_tool(answer) as tool:
            await make_agent(cloud, "durable", tools=[weather_tool(tool.url)])
            names = ["Paris", "Rome", "Oslo", "Bern", "Kyiv"]
            cloud.fake.script.extend([*cities(*names), Reply(text="all grey")])
            first = await cloud.spawn_worker(**env)
            run_id = await cloud.start("durable", input="Tour")
            try:
                await asyncio.wait_for(entered.wait(), 60)
            except TimeoutError:
                raise AssertionError(await cloud.runs.events(run_id)) from None
            first.send_signal(signal.SIGKILL)
            await first.wait()
            release.set()
            await cloud.spawn_worker(**env)
            run = await cloud.wait(run_id, timeout=90)
        assert run.status == "completed", (kill_at, run.error_code, run.error_message)
        assert run.output == "all grey" and run.attempt == 2
        # Each model call reached the provider once; each tool call arrived once, but the
        # one in flight at the kill, which may have arrived twice.
        assert cloud.fake.stats.by_route["/v1/chat/completions"] == 6
        got = [b["city"] for b in tool.bodies()]
        repeats = len(got) - len(set(got))
        assert set(got) == set(names) and repeats <= 1, (kill_at, got)
        assert [c.tool_calls[0].input["city"] for c in run.steps[:5]] == names


async def test_a_claude_model_speaks_the_anthropic_messages_shape(cloud: Cloud) -> None:
    async with running_http_tool() as tool:
        await make_agent(cloud, "claude-weather", model="claude-3-5-haiku-latest",
                         instructions="Report the weather.", temperature=0.0,
                         tools=[weather_tool(tool.url)])  # fmt: skip
        cloud.fake.script.extend([*cities("Oslo"), Reply(text="Cold.")])
        run = await cloud.wait(await cloud.start("claude-weather", input="Oslo?"))
    assert run.status == "completed" and run.output == "Cold.", run.error_message
    assert [s.provider for s in run.steps] == ["anthropic", "anthropic"]
    assert run.steps[0].tool_calls[0].output == {"city": "Oslo", "sky": "sunny", "celsius": 21}
    last = cloud.fake.stats.requests[-1]
    assert last.path == "/v1/messages" and last.body["system"] == "Report the weather."
    assert last.body["tools"][0]["input_schema"] == CITY and last.body["temperature"] == 0.0
    [result] = last.body["messages"][-1]["content"]
    assert result["type"] == "tool_result" and result["is_error"] is False
    assert result["content"] == '{"celsius": 21, "city": "Oslo", "sky": "sunny"}'


async def cli(cloud: Cloud, *args: str) -> tuple[int, str]:
    env = {**os.environ, "PAPAYYA_BASE_URL": cloud.url, "PAPAYYA_API_KEY": cloud.key}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_the_cli_makes_a_configured_agent_and_prints_its_answer(cloud: Cloud) -> None:
    async with running_http_tool() as tool, running_mcp_server() as mcp:
        code, out = await cli(
            cloud, "agents", "create", "--name", "Researcher", "--slug", "researcher",
            "--model", "gpt-4o-mini", "--instructions", "Research briefly.",
            "--tool-url", f"weather={tool.url}", "--mcp", mcp.url,
        )  # fmt: skip
        assert code == 0, out
        config = json.loads(out)["config"]
        assert [t["name"] for t in config["tools"]] == ["weather"]
        assert config["mcp_servers"][0]["url"] == mcp.url
        cloud.fake.script.extend([*cities("Paris"), Reply(text="Paris is sunny.")])
        code, out = await cli(cloud, "run", "researcher", "--input", '"Paris?"', "--wait")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[-2] == "Paris is sunny." and lines[-1].endswith("completed")
        assert tool.bodies() == [{"city": "Paris"}]
        # The same conversation from step 1 with other instructions (while the tool servers
        # are up: the tools offered are part of each request, so of its fingerprint).
        cloud.fake.script.append(Reply(text="Paris: soleil."))
        code, out = await cli(cloud, "runs", "replay", lines[0], "--from-step", "1",
                              "--system-prompt", "Answer in French.")  # fmt: skip
        assert code == 0, out
        replay = await cloud.wait(out.strip())
        assert replay.status == "completed" and replay.output == "Paris: soleil."
        assert replay.diverged_at_step is None and replay.steps[0].usage.cost_micro_usd == 0
        assert cloud.fake.stats.last is not None
        assert cloud.fake.stats.last.body["messages"][0]["content"] == "Answer in French."


async def test_a_worker_killed_mid_model_call_repeats_at_most_that_call(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kill_at = random.randrange(6)  # the model call in flight when the worker dies
    # The lost attempt's call never settles: the sweeper settles it at its reservation.
    monkeypatch.setenv("PAPAYYA_SETTLE_WAIT_SECONDS", "1")
    slow = FakeConfig(latency=Latency(first_byte=0.5))
    async with running_cloud(dsn, monkeypatch, tmp_path, slow, worker=False) as cloud:
        env = {
            "PAPAYYA_OPENAI_BASE_URL": cloud.fake.openai_base_url,
            "PAPAYYA_OPENAI_API_KEY": "sk-test",
            "PAPAYYA_CALLBACK_ALLOW_PRIVATE": "1",
        }
        async with running_http_tool() as tool:
            await make_agent(cloud, "durable", tools=[weather_tool(tool.url)])
            names = ["Paris", "Rome", "Oslo", "Bern", "Kyiv"]
            replies = [*cities(*names), Reply(text="all grey")]
            # The fake hands the call cut off by the kill its scripted reply: the repeat of
            # that call, on the next worker, must get the same one, as a real model's would.
            replies.insert(kill_at, replies[kill_at])
            cloud.fake.script.extend(replies)
            first = await cloud.spawn_worker(**env)
            run_id = await cloud.start("durable", input="Tour")
            while cloud.fake.stats.total < kill_at + 1:
                await asyncio.sleep(0.01)
                if (await cloud.runs.load(run_id)).is_terminal:
                    raise AssertionError(await cloud.runs.events(run_id))
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await cloud.spawn_worker(**env)
            run = await cloud.wait(run_id, timeout=90)
        assert run.status == "completed", (kill_at, run.error_code, run.error_message)
        assert run.output == "all grey" and run.attempt == 2
        # Six model calls, and the one cut off by the kill once more; each tool call once.
        calls = cloud.fake.stats.by_route["/v1/chat/completions"]
        got = [b["city"] for b in tool.bodies()]
        assert calls == 7 and got == names, (kill_at, calls, got)
