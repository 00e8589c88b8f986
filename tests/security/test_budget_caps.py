"""The output cap a call is reserved for is the one the provider sees (issue 14 §4), and the
gateway changes no answer nobody asked it to change (issue 14 §6)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client import REGISTRY

from fakellm import FakeConfig, Reply, Usage
from tests.support.budgets import (
    ASK,
    CENT,
    CENTS_MODEL,
    events_of,
    llm_calls,
    price_in_cents,
    reservations,
    settlements,
    until,
)
from tests.support.gateway import Gateway, running_gateway

CAPPED = "x-papayya-output-capped"
CAP_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=Usage(completion_tokens=3))) as g:
        await price_in_cents(g)
        yield g
        for client in g.clients:
            result = client.close()
            if asyncio.iscoroutine(result):
                await result


def sent_caps(gw: Gateway) -> dict[str, Any]:
    """The output cap fields of the last request the provider received."""
    last = gw.fake.stats.last
    assert last is not None
    return {k: v for k, v in last.body.items() if k in CAP_FIELDS}


async def test_both_chat_cap_fields_become_the_one_reserved(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    await gw.openai(token).chat.completions.create(
        model=CENTS_MODEL, messages=ASK, max_completion_tokens=1, max_tokens=50
    )
    assert sent_caps(gw) == {"max_completion_tokens": 1}
    (reserved,) = reservations(await events_of(gw, state.run_id))
    assert reserved.output_tokens == 1


async def test_the_responses_route_reserves_the_cap_it_honours(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    await gw.openai(token).responses.create(
        model=CENTS_MODEL, input="hi", max_output_tokens=50, extra_body={"max_tokens": 1}
    )
    assert sent_caps(gw) == {"max_output_tokens": 50}
    (reserved,) = reservations(await events_of(gw, state.run_id))
    assert reserved.output_tokens == 50


async def test_chat_n_multiplies_the_reservation(gw: Gateway) -> None:
    gw.fake.configure(usage={"completion_tokens": 10})
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    client = gw.openai(token)
    reply = await client.chat.completions.create(
        model=CENTS_MODEL, messages=ASK, n=3, max_tokens=10
    )
    assert len(reply.choices) == 3 and reply.usage is not None
    assert reply.usage.completion_tokens == 30
    events = await events_of(gw, state.run_id)
    assert reservations(events)[0].output_tokens == 30
    assert not settlements(events)[0].over_reservation
    # Three answers of 10 tokens do not fit in the 70 cents left: refused, never sent.
    before = gw.fake.stats.total
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model=CENTS_MODEL, messages=ASK, n=8, max_tokens=10)
    assert refused.value.status_code == 402 and gw.fake.stats.total == before


async def test_a_provider_reporting_past_the_reservation_is_marked_and_ends_the_run(
    gw: Gateway,
) -> None:
    state, token = await gw.start_run(budget_micro_usd=50 * CENT)
    gw.fake.script.append(Reply(past_cap=True, usage=Usage(completion_tokens=80)))
    await gw.openai(token).chat.completions.create(model=CENTS_MODEL, messages=ASK, max_tokens=10)
    events = await events_of(gw, state.run_id)
    (settled,) = settlements(events)
    assert settled.over_reservation and settled.actual_micro_usd == 80 * CENT
    (call,) = llm_calls(events)
    assert call.over_reservation and call.output_tokens == 80  # as reported
    run = await gw.runs.load(state.run_id)
    assert run.steps[0].over_reservation and run.committed.micro_usd == 80 * CENT
    assert run.status == "budget_exceeded"


async def test_over_reporting_within_the_budget_is_marked_and_the_run_goes_on(
    gw: Gateway,
) -> None:
    state, token = await gw.start_run(budget_micro_usd=500 * CENT)
    gw.fake.script.append(Reply(past_cap=True, usage=Usage(completion_tokens=80)))
    await gw.openai(token).chat.completions.create(model=CENTS_MODEL, messages=ASK, max_tokens=10)
    run = await gw.runs.load(state.run_id)
    assert run.steps[0].over_reservation and run.status == "running"


async def test_without_a_budget_no_output_cap_is_injected(gw: Gateway) -> None:
    _state, token = await gw.start_run()
    client = gw.openai(token)
    reply = await client.chat.completions.with_raw_response.create(model=CENTS_MODEL, messages=ASK)
    assert sent_caps(gw) == {} and CAPPED not in reply.headers
    await client.responses.create(model=CENTS_MODEL, input="hi")
    assert sent_caps(gw) == {}
    stream = await client.chat.completions.create(model=CENTS_MODEL, messages=ASK, stream=True)
    async for _chunk in stream:
        pass
    assert sent_caps(gw) == {}


async def test_a_cap_forced_by_the_budget_is_announced_and_recorded(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=20 * CENT)
    client = gw.openai(token)
    raw = await client.chat.completions.with_raw_response.create(model=CENTS_MODEL, messages=ASK)
    assert raw.headers[CAPPED] == "20"
    assert sent_caps(gw) == {"max_completion_tokens": 20}
    run = await gw.runs.load(state.run_id)
    assert run.steps[0].output_capped == 20
    # A cap the budget affords is the caller's own: no header, nothing recorded.
    raw = await client.chat.completions.with_raw_response.create(
        model=CENTS_MODEL, messages=ASK, max_tokens=5
    )
    assert CAPPED not in raw.headers
    assert (await gw.runs.load(state.run_id)).steps[1].output_capped is None


async def test_the_step_api_shows_the_marks(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=20 * CENT)
    await gw.openai(token).chat.completions.create(model=CENTS_MODEL, messages=ASK)
    url = f"{gw.api.url}/v1/runs/{state.run_id}/steps"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=gw.api.headers()) as resp:
            steps = await resp.json()
    assert steps[0]["output_capped"] == 20
    assert steps[0]["usage_estimated"] is False and steps[0]["over_reservation"] is False


async def test_an_anthropic_max_tokens_past_the_budget_is_clamped(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=30 * CENT)
    client = gw.anthropic(token)
    raw = await client.messages.with_raw_response.create(
        model=CENTS_MODEL, max_tokens=1000, messages=ASK
    )
    assert raw.headers[CAPPED] == "30"
    assert sent_caps(gw) == {"max_tokens": 30}
    run = await gw.runs.load(state.run_id)
    assert run.status == "running" and run.steps[0].output_capped == 30
    assert run.committed.micro_usd == 3 * CENT  # what it used, not what it reserved


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": "50"},
        {"max_tokens": 0},
        {"max_completion_tokens": True},
        {"max_tokens": 2**40},
        {"max_completion_tokens": 1.5},
        {"n": 0},
        {"n": "3"},
        {"n": 1000},
    ],
)
async def test_caps_the_gateway_cannot_reserve_for_are_refused(
    gw: Gateway, fields: dict[str, Any]
) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    before = gw.fake.stats.total
    with pytest.raises(openai.BadRequestError):
        await gw.openai(token).chat.completions.create(
            model=CENTS_MODEL, messages=ASK, extra_body=fields
        )
    assert gw.fake.stats.total == before
    assert len(await events_of(gw, state.run_id)) == 2  # queued and started: nothing written


def gateway_500s() -> float:
    labels = {"route": "/v1/llm/openai/{route}", "status": "500"}
    return REGISTRY.get_sample_value("papayya_http_requests_total", labels) or 0.0


async def test_a_finished_sync_stream_is_no_error(
    dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A synchronous OpenAI SDK closes the connection as soon as it reads [DONE]; the gateway
    still has its end of the body to write."""
    before = gateway_500s()
    with caplog.at_level(logging.ERROR):
        async with running_gateway(dsn, monkeypatch) as gw:
            state, token = await gw.start_run()
            client = gw.openai(token, sync=True)

            def consume() -> int:
                stream = client.chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
                return sum(1 for _ in stream)

            for _ in range(3):
                assert await asyncio.to_thread(consume) > 0
            client.close()
            run = await until(gw, state.run_id, lambda s: len(s.steps) == 3)
        # The server has stopped, its handlers all finished: whatever they log is logged.
    assert [s.status for s in run.steps] == ["completed"] * 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert gateway_500s() == before
