"""The built-in loop's tools with headers from the project's secrets (issue 17 §3): the
value reaches the tool server and nothing else; a missing secret is the tool's error."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fakellm import Reply, ToolCall
from tests.support.agentloop import running_http_tool, running_mcp_server
from tests.support.cloud import Cloud, running_cloud
from web import keys

pytestmark = pytest.mark.timeout(120)

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOKEN = "tok-5e3f0c7a9d1b4e2f8a6c"


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as c:
        yield c


def tool(name: str, url: str, headers: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "description": "Weather", "parameters": CITY, "url": url,
            "headers": headers}  # fmt: skip


async def test_tool_headers_take_project_secrets_and_the_value_stays_out_of_the_record(
    cloud: Cloud, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    status, listed = await cloud.call("GET", "/v1/projects")
    assert status == 200, listed
    project = listed[0]["id"]
    status, _ = await cloud.call(
        "POST", f"/v1/projects/{project}/secrets", {"name": "WEATHER_TOKEN", "value": TOKEN}
    )
    assert status == 200

    async def checked(body: Any) -> web.StreamResponse:
        return web.json_response({"city": body["city"], "sky": "sunny"})

    async with running_http_tool(checked) as http, running_mcp_server() as mcp:
        auth = {"Authorization": {"secret": "WEATHER_TOKEN", "prefix": "Bearer "},
                "X-Plain": "yes"}  # fmt: skip
        config = {
            "model": "gpt-4o-mini",
            "tools": [tool("weather", http.url, auth),
                      tool("missing", http.url, {"X-Key": {"secret": "NO_SUCH_SECRET"}})],
            "mcp_servers": [{"url": mcp.url, "allowed_tools": ["forecast"],
                             "headers": {"X-Mcp-Token": {"secret": "WEATHER_TOKEN"}}}],
        }  # fmt: skip
        status, created = await cloud.call(
            "POST", "/v1/agents", {"name": "w", "slug": "w", "config": config}
        )
        assert status == 201, created
        assert created["config"]["tools"][0]["headers"] == auth  # names, never values
        cloud.fake.script.extend([
            Reply(tool_calls=[ToolCall("weather", {"city": "Paris"})]),
            Reply(tool_calls=[ToolCall("missing", {"city": "Paris"})]),
            Reply(tool_calls=[ToolCall("forecast", {"city": "Paris"})]),
            Reply(text="Sunny."),
        ])  # fmt: skip
        run = await cloud.wait(await cloud.start("w", input="Weather in Paris?"))
    assert run.status == "completed", (run.error_code, run.error_message)
    weather, missing, forecast = (s.tool_calls[0] for s in run.steps[:3])
    assert weather.error is None and weather.output == {"city": "Paris", "sky": "sunny"}
    [(headers, _)] = http.received  # the tool with a missing secret was never called
    assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["X-Plain"] == "yes"
    assert missing.output is None and missing.error is not None
    assert "NO_SUCH_SECRET" in missing.error
    assert forecast.error is None and mcp.calls == [("forecast", "Paris")]
    assert mcp.headers and all(h.get("x-mcp-token") == TOKEN for h in mcp.headers)
    # The model was told of the missing secret by name.
    results = [m["content"] for m in cloud.fake.stats.requests[-1].body["messages"]
               if m["role"] == "tool"]  # fmt: skip
    assert "NO_SUCH_SECRET" in results[1] and TOKEN not in json.dumps(results)

    pool = cloud.app[keys.STORE].pool
    events = [r["row"] for r in await pool.fetch("SELECT e::text AS row FROM events e")]
    payloads = [bytes(r["content"]) for r in await pool.fetch("SELECT content FROM payloads")]
    answers = [json.dumps((await cloud.call("GET", f"/v1/runs/{run.run_id}{s}"))[1])
               for s in ("", "/steps", "/state")]  # fmt: skip
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    out, err = capfd.readouterr()
    assert events and len(logged) > 3
    assert not any(TOKEN in text for text in events + answers + logged + [out, err])
    assert not any(TOKEN.encode() in content for content in payloads)


async def test_a_secret_header_of_a_bad_shape_is_refused(cloud: Cloud) -> None:
    bad = tool("weather", "https://example.com/t", {"Authorization": {"secret": ""}})
    status, body = await cloud.call(
        "POST", "/v1/agents", {"name": "b", "slug": "b", "config": {"model": "m", "tools": [bad]}}
    )
    assert status == 400, body
    status, agents = await cloud.call("GET", "/v1/agents")
    assert status == 200 and not [a for a in agents if a["slug"] == "b"]
