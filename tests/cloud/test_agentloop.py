"""The built-in agent loop (issue 17) end to end: a worker runs an agent made of
configuration alone against the fake provider, with real HTTP and MCP tool servers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import Reply, ToolCall
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
