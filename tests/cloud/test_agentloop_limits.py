"""The built-in agent loop's limits and misbehaving tools: budgets (402 semantics, then a
resume), max_steps, the loop detector, cancellation mid-tool, tools that time out, fail,
answer too much or point at a refused address, and an answer against ``output_schema``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fakellm import Reply, ToolCall
from papayya.domain.events import AgentOutput
from tests.support.agentloop import running_http_tool, running_mcp_server
from tests.support.cloud import Cloud, running_cloud

pytestmark = pytest.mark.timeout(120)

ANY = {"type": "object", "properties": {"kind": {"type": "string"}}}


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as c:
        yield c


async def make_agent(cloud: Cloud, slug: str, **config: Any) -> None:
    body = {"name": slug, "slug": slug, "config": {"model": "gpt-4o-mini", **config}}
    status, created = await cloud.call("POST", "/v1/agents", body)
    assert status == 201, created


def tool(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": name, "parameters": ANY, "url": url, **extra}


def calls(*names: str) -> Reply:
    return Reply(tool_calls=[ToolCall(n, {"kind": n}) for n in names])


async def test_tools_that_fail_are_recorded_and_handed_back(cloud: Cloud) -> None:
    async def answer(body: Any) -> web.StreamResponse:
        kind = body["kind"]
        if kind == "slow":
            await asyncio.sleep(5)
        if kind == "broken":
            return web.json_response({"oops": True}, status=500)
        if kind == "huge":
            return web.Response(body=b"x" * 200_000)
        return web.json_response({"ok": kind})

    async with running_http_tool(answer) as server:
        await make_agent(cloud, "flaky", tools=[
            tool("slow", server.url, timeout_seconds=0.5), tool("broken", server.url),
            tool("huge", server.url), tool("fine", server.url),
        ])  # fmt: skip
        cloud.fake.script.extend([calls("slow", "broken", "huge", "ghost", "fine"),
                                  Reply(text="I did what I could.")])  # fmt: skip
        run = await cloud.wait(await cloud.start("flaky", input="go"))
    assert run.status == "completed" and run.output == "I did what I could."
    got = {c.tool: c for c in run.steps[0].tool_calls}
    assert list(got) == ["slow", "broken", "huge", "ghost", "fine"]
    assert "did not answer within 0.5 s" in (got["slow"].error or "")
    assert "HTTP 500" in (got["broken"].error or "")
    assert "larger than" in (got["huge"].error or "")
    assert "no tool named 'ghost'" in (got["ghost"].error or "")
    assert got["fine"].error is None and got["fine"].output == {"ok": "fine"}
    told = [m["content"] for m in cloud.fake.stats.requests[-1].body["messages"]
            if m["role"] == "tool"]  # fmt: skip
    assert [t.startswith("error: ") for t in told] == [True, True, True, True, False]


async def test_a_tool_at_a_refused_address_is_an_error_result(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with running_cloud(dsn, monkeypatch, tmp_path, callback_allow_private=False) as cloud:
        await make_agent(
            cloud,
            "guarded",
            tools=[tool("inside", "http://10.0.0.1/x"), tool("local", "http://127.0.0.1:9/x")],
        )
        cloud.fake.script.extend([calls("inside", "local"), Reply(text="blocked")])
        run = await cloud.wait(await cloud.start("guarded", input="go"))
    assert run.status == "completed"
    errors = [c.error or "" for c in run.steps[0].tool_calls]
    assert len(errors) == 2 and all("private, loopback or link-local" in e for e in errors)


async def test_output_schema_is_enforced(cloud: Cloud) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"]}  # fmt: skip
    await make_agent(cloud, "typed", output_schema=schema)
    cloud.fake.script.append(Reply(text='{"answer": 4}'))
    good = await cloud.wait(await cloud.start("typed", input="2+2?"))
    assert good.status == "completed" and good.output == {"answer": 4}
    sent = cloud.fake.stats.requests[-1].body
    assert sent["response_format"]["json_schema"]["schema"] == schema
    for text in ('{"answer": "four"}', "four"):
        cloud.fake.script.append(Reply(text=text))
        bad = await cloud.wait(await cloud.start("typed", input="2+2?"))
        assert bad.status == "failed" and bad.error_code == "output_schema_mismatch"
        assert "output_schema" in (bad.error_message or "")


async def test_max_steps_and_the_loop_detector_end_the_run(cloud: Cloud) -> None:
    async with running_http_tool() as server:
        weather = tool("weather", server.url)
        await make_agent(cloud, "long", tools=[weather], max_steps=2)
        cloud.fake.script.extend([calls("weather"), Reply(tool_calls=[
            ToolCall("weather", {"kind": "other"})]), calls("weather")])  # fmt: skip
        run = await cloud.wait(await cloud.start("long", input="go"))
        assert run.status == "failed" and run.error_code == "max_steps_exceeded"
        assert len(run.steps) == 2
        cloud.fake.script.clear()
        await make_agent(cloud, "loopy", tools=[weather], loop_threshold=3)
        cloud.fake.script.extend([calls("weather")] * 5)
        run = await cloud.wait(await cloud.start("loopy", input="go"))
        assert run.status == "failed" and run.error_code == "loop_detected"
        # The third identical request ended the run before its tool ran.
        assert len(run.steps) == 3 and [len(s.tool_calls) for s in run.steps] == [1, 1, 0]
        cloud.fake.script.clear()


async def test_the_budget_stops_the_loop_and_a_resume_continues(cloud: Cloud) -> None:
    await make_agent(cloud, "thrifty")
    cloud.fake.script.append(Reply(text="worth the wait"))
    run_id = await cloud.start("thrifty", input="hello", budget_total_tokens=5)
    run = await cloud.wait(run_id)
    assert run.status == "budget_exceeded" and run.steps == ()
    before = cloud.fake.stats.total
    status, body = await cloud.call(
        "POST", f"/v1/runs/{run_id}/resume", {"budget_total_tokens": 100_000}
    )
    assert status == 200, body
    run = await cloud.wait(run_id, statuses={"completed", "failed", "cancelled"})
    assert run.status == "completed" and run.output == "worth the wait"
    assert cloud.fake.stats.total == before + 1


async def test_cancel_mid_tool_ends_the_run(cloud: Cloud) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def answer(body: Any) -> web.StreamResponse:
        entered.set()
        await release.wait()
        return web.json_response({"late": True})

    async with running_http_tool(answer) as server:
        await make_agent(cloud, "stuck", tools=[tool("wait", server.url)])
        cloud.fake.script.extend([calls("wait"), Reply(text="never")])
        run_id = await cloud.start("stuck", input="go")
        await asyncio.wait_for(entered.wait(), 30)
        status, body = await cloud.call("POST", f"/v1/runs/{run_id}/cancel", {})
        assert status in (200, 202), body
        run = await cloud.wait(run_id)
        release.set()
    assert run.status == "cancelled"
    assert run.steps[0].tool_calls == ()  # cut off in flight: nothing recorded
    assert len(cloud.fake.script) == 1  # the model was not called again
    cloud.fake.script.clear()


async def test_cancel_mid_model_call_still_records_and_settles_that_call(cloud: Cloud) -> None:
    await make_agent(cloud, "slowpoke")
    cloud.fake.configure(latency={"first_byte": 1.0})
    cloud.fake.script.append(Reply(text="too late"))
    run_id = await cloud.start("slowpoke", input="go")
    while cloud.fake.stats.total < 1:
        await asyncio.sleep(0.01)
    status, body = await cloud.call("POST", f"/v1/runs/{run_id}/cancel", {})
    assert status in (200, 202), body
    run = await cloud.wait(run_id)
    assert run.status == "cancelled"
    for _ in range(200):  # the call goes on at the provider, then is recorded and settled
        run = await cloud.runs.load(run_id)
        if not run.reservations:
            break
        await asyncio.sleep(0.05)
    assert run.reservations == () and run.committed.micro_usd > 0
    assert cloud.fake.stats.total == 1


async def test_an_mcp_tool_that_fails_and_a_server_that_is_away_are_survived(
    cloud: Cloud,
) -> None:
    async with running_mcp_server() as mcp:
        await make_agent(cloud, "mcp-flaky", mcp_servers=[
            {"url": mcp.url, "allowed_tools": ["broken"]}, {"url": "http://127.0.0.1:9/mcp"},
        ])  # fmt: skip
        cloud.fake.script.extend([Reply(tool_calls=[ToolCall("broken", {"city": "Oz"})]),
                                  Reply(text="no luck")])  # fmt: skip
        run = await cloud.wait(await cloud.start("mcp-flaky", input="Oz?"))
    assert run.status == "completed" and run.output == "no luck", run.error_message
    [call] = run.steps[0].tool_calls
    assert call.tool == "broken" and "no data for Oz" in (call.error or "")
    offered = cloud.fake.stats.requests[-1].body["tools"]
    assert [t["function"]["name"] for t in offered] == ["broken"]
    logs = [e for e in await cloud.runs.events(run.run_id) if isinstance(e, AgentOutput)]
    assert any("127.0.0.1:9/mcp" in line for e in logs for _, line in e.lines)
