"""The LLM gateway, driven by the official SDKs against the fake provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import openai
import pytest

from fakellm import FakeConfig, Reply, ToolCall, Usage
from papayya.pricing import Tokens, prices_for
from tests.support.gateway import PROVIDER_KEY, Gateway, running_gateway

MODEL = "gpt-4o"  # priced by genai-prices
USAGE = Usage(prompt_tokens=1200, completion_tokens=300, cached_tokens=200, reasoning_tokens=50)


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gateway:
        yield gateway
        for client in gateway.clients:
            result = client.close()
            if asyncio.iscoroutine(result):
                await result


def expected_cost() -> int:
    prices = prices_for("openai", MODEL)
    assert prices is not None
    tokens = Tokens(input_tokens=1000, cached_input_tokens=200, output_tokens=250,
                    reasoning_tokens=50)  # fmt: skip
    return prices.cost_micro_usd(tokens)


async def test_chat_completion_is_metered_and_uses_the_real_key(gw: Gateway) -> None:
    state, token = await gw.start_run()
    client = gw.openai(token)
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert gw.fake.stats.last is not None and gw.fake.stats.last.api_key == PROVIDER_KEY
    run = await gw.runs.load(state.run_id)
    step = run.steps[0]
    assert step.step_type == "response" and step.status == "completed" and step.model == MODEL
    assert step.usage.input_tokens == 1000 and step.usage.cached_input_tokens == 200
    assert step.usage.output_tokens == 250 and step.usage.reasoning_tokens == 50
    assert step.usage.cost_micro_usd == expected_cost() > 0
    assert run.committed.micro_usd == expected_cost() and run.reservations == ()


async def test_streaming_hides_injected_usage_chunk(gw: Gateway) -> None:
    state, token = await gw.start_run()
    client = gw.openai(token)
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and all(c.choices for c in chunks)  # the usage-only chunk was hidden
    assert gw.fake.stats.last is not None
    assert gw.fake.stats.last.body["stream_options"] == {"include_usage": True}
    run = await gw.runs.load(state.run_id)
    assert run.steps[0].usage.cost_micro_usd == expected_cost()
    assert run.steps[0].usage.output_tokens == 250
    # A caller that asked for usage sees it.
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "again"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    asked = [chunk async for chunk in stream]
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 300


async def test_tool_call_step_and_sync_client(gw: Gateway) -> None:
    state, token = await gw.start_run()
    gw.fake.script.append(Reply(tool_calls=[ToolCall("search", {"q": "papayya"})]))
    client = gw.openai(token, sync=True)
    tools = [{"type": "function", "function": {"name": "search", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]  # fmt: skip
    reply = await asyncio.to_thread(
        client.chat.completions.create,
        model=MODEL, messages=[{"role": "user", "content": "find"}], tools=tools,
    )  # fmt: skip
    assert reply.choices[0].message.tool_calls
    step = (await gw.runs.load(state.run_id)).steps[0]
    assert step.step_type == "tool_call"
    assert step.requested_tools[0]["name"] == "search"
    assert step.requested_tools[0]["arguments"] == {"q": "papayya"}


async def test_anthropic_messages_streamed_and_not(gw: Gateway) -> None:
    state, token = await gw.start_run()
    client = gw.anthropic(token)
    message = await client.messages.create(
        model="claude-test", max_tokens=1000, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content
    async with client.messages.stream(
        model="claude-test", max_tokens=1000, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = await stream.get_final_message()
    assert final.usage.output_tokens == 300  # Anthropic reports no reasoning bucket
    run = await gw.runs.load(state.run_id)
    assert [s.status for s in run.steps] == ["completed", "completed"]
    # Anthropic's stream reports a cumulative output count: recorded once, not summed.
    assert run.steps[1].usage.output_tokens == 300
    assert run.steps[1].usage.cached_input_tokens == 200


async def test_bad_requests_are_refused_without_calling_upstream(gw: Gateway) -> None:
    _state, token = await gw.start_run()
    client = gw.openai(token)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="", messages=[])
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{gw.openai_url}/chat/completions", data=b"{nope",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:  # fmt: skip
            assert resp.status == 400
            assert (await resp.json())["error"]["message"]
    budgeted, budget_token = await gw.start_run(budget_micro_usd=1_000_000)
    priced = gw.openai(budget_token)
    with pytest.raises(openai.BadRequestError, match="no price"):
        await priced.chat.completions.create(
            model="mystery-model", messages=[{"role": "user", "content": "x"}]
        )
    assert gw.fake.stats.total == 0
    assert (await gw.runs.load(budgeted.run_id)).steps == ()


async def test_run_tokens_only_work_while_running(gw: Gateway) -> None:
    state, token = await gw.start_run()
    for bad in ("not-a-token", token + "x", gw.token(state.run_id, 2)):
        client = gw.openai(bad)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model=MODEL, messages=[])
    from papayya.domain import events as ev

    await gw.runs.append(state, [ev.RunCompleted(output="done")])
    client = gw.openai(token)
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model=MODEL, messages=[])
    assert gw.fake.stats.total == 0


async def test_rate_card_wins_over_the_table(gw: Gateway) -> None:
    import aiohttp

    project = await gw.project_id()
    card = {MODEL: {"input_per_million_usd": "1", "output_per_million_usd": "2"}}
    async with aiohttp.ClientSession() as http:
        url = f"{gw.api.url}/v1/projects/{project}/rate-card"
        async with http.put(url, json=card, headers=gw.api.headers()) as resp:
            assert resp.status == 200
        async with http.put(url, json={MODEL: {"input_per_million_usd": "x"}},
                            headers=gw.api.headers()) as resp:  # fmt: skip
            assert resp.status == 400
        async with http.get(url, headers=gw.api.headers()) as resp:
            listed = {
                m: {k: v for k, v in e.items() if "usd" in k}
                for m, e in (await resp.json()).items()
            }
            assert listed == card
    state, token = await gw.start_run()
    client = gw.openai(token)
    await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    step = (await gw.runs.load(state.run_id)).steps[0]
    # 1,200 input tokens at $1/M and 300 output at $2/M: 1,200 + 600 micro-dollars.
    assert step.usage.cost_micro_usd == int(Decimal(1200) * 1 + Decimal(300) * 2)


async def test_responses_api_and_embeddings(gw: Gateway) -> None:
    state, token = await gw.start_run()
    client = gw.openai(token)
    response = await client.responses.create(model=MODEL, input="hello")
    assert response.output_text
    stream = await client.responses.create(model=MODEL, input="again", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    vectors = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(vectors.data) == 2
    run = await gw.runs.load(state.run_id)
    assert [s.status for s in run.steps] == ["completed"] * 3
    assert run.steps[1].usage.output_tokens == 250  # usage read from response.completed
    assert run.steps[2].model == "text-embedding-3-small" and run.steps[2].usage.input_tokens > 0
    assert all(s.usage.cost_micro_usd > 0 for s in run.steps)
