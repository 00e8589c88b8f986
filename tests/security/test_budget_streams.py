"""A call that ends without its usage is counted at its reservation (issue 14 §3): a stream
cut before its usage chunk, a caller that hangs up, a provider that resets, a timeout, and a
gateway that died mid-call (found by the sweeper)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anthropic
import openai
import pytest

from fakellm import FakeConfig, Latency, Reply
from fakellm.config import Cut
from papayya.domain import events as ev
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
from web import keys
from workers.queue import RunQueue, connect
from workers.sweeper import Sweeper

REDIS_URL = os.environ.get("PAPAYYA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

LONG = " ".join(f"word{i}" for i in range(60))


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    # A gateway whose calls may take 2 s at most, so that the timeout test is quick.
    monkeypatch.setenv("PAPAYYA_GATEWAY_TIMEOUT_SECONDS", "2")
    async with running_gateway(dsn, monkeypatch, FakeConfig(text=LONG)) as gateway:
        await price_in_cents(gateway)
        yield gateway
        for client in gateway.clients:
            await client.close()


async def cut_stream(client: openai.AsyncOpenAI, **options: object) -> None:
    """One streamed call the provider cuts short: the caller's SDK sees an error."""
    stream = await client.chat.completions.create(
        model=CENTS_MODEL, messages=ASK, stream=True, **options
    )
    with pytest.raises(openai.APIError):
        async for _chunk in stream:
            pass


async def test_streams_cut_before_their_usage_spend_the_budget(gw: Gateway) -> None:
    """The issue's reproduction: 10 streams cut before the usage chunk, 50 cents, 1 cent a
    token. Today each is settled at $0 and the run stays running."""
    state, token = await gw.start_run(budget_micro_usd=50 * CENT)
    client = gw.openai(token)
    for _ in range(10):
        gw.fake.script.append(Reply(cut=Cut(after_events=3, how="end")))
        await cut_stream(client, max_tokens=5)
    events = await events_of(gw, state.run_id)
    held = sum(r.amount_micro_usd for r in reservations(events))
    assert held == 50 * CENT  # 10 calls of 5 tokens at a cent each
    run = await gw.runs.load(state.run_id)
    assert run.committed.micro_usd >= held and run.reservations == ()
    assert run.usage.cost_micro_usd == held  # the run shows what it was charged
    assert all(s.usage_estimated for s in settlements(events))
    assert all(c.usage_estimated for c in llm_calls(events)) and len(run.steps) == 10
    assert run.status == "budget_exceeded"
    before = gw.fake.stats.total
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model=CENTS_MODEL, messages=ASK, max_tokens=1)
    assert refused.value.status_code == 402
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert gw.fake.stats.total == before


async def test_a_cut_stream_leaves_a_run_with_budget_running(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    gw.fake.script.append(Reply(cut=Cut(after_events=2, how="end")))
    await cut_stream(gw.openai(token), max_tokens=10)
    run = await gw.runs.load(state.run_id)
    assert run.status == "running" and run.committed.micro_usd == 10 * CENT
    step = run.steps[0]
    assert step.status == "failed" and step.usage_estimated
    assert step.usage.cost_micro_usd == 10 * CENT


async def test_a_caller_that_hangs_up_midstream_pays_the_reservation(gw: Gateway) -> None:
    gw.fake.configure(latency=Latency(per_chunk=0.05))
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    stream = await gw.openai(token).chat.completions.create(
        model=CENTS_MODEL, messages=ASK, stream=True, max_tokens=40
    )
    seen = 0
    async for _chunk in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    run = await until(gw, state.run_id, lambda s: not s.reservations)
    assert run.committed.micro_usd == 40 * CENT
    assert run.steps[0].usage_estimated and run.steps[0].status == "failed"
    assert "went away" in (run.steps[0].error_message or "")


async def test_an_upstream_reset_counts_the_reservation(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    gw.fake.script.append(Reply(cut=Cut(after_events=4, how="reset")))
    await cut_stream(gw.openai(token), max_tokens=30)
    run = await gw.runs.load(state.run_id)
    assert run.committed.micro_usd == 30 * CENT and run.steps[0].usage_estimated
    assert "broke off" in (run.steps[0].error_message or "")


async def test_an_anthropic_stream_reset_counts_the_reservation(gw: Gateway) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    gw.fake.script.append(Reply(cut=Cut(after_events=4, how="reset")))
    client = gw.anthropic(token)
    with pytest.raises(anthropic.APIError):
        async with client.messages.stream(model=CENTS_MODEL, max_tokens=20, messages=ASK) as stream:
            async for _event in stream:
                pass
    run = await gw.runs.load(state.run_id)
    assert run.committed.micro_usd == 20 * CENT and run.steps[0].usage_estimated


async def test_a_provider_that_stalls_times_out_and_counts_the_reservation(
    gw: Gateway,
) -> None:
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    gw.fake.script.append(Reply(cut=Cut(after_events=2, how="stall")))
    await cut_stream(gw.openai(token), max_tokens=25)
    run = await gw.runs.load(state.run_id)
    assert run.committed.micro_usd == 25 * CENT and run.steps[0].usage_estimated


async def test_a_call_that_times_out_before_its_answer_counts_the_reservation(
    gw: Gateway,
) -> None:
    gw.fake.configure(latency=Latency(first_byte=4))
    state, token = await gw.start_run(budget_micro_usd=100 * CENT)
    with pytest.raises(openai.APIStatusError) as failed:
        await gw.openai(token).chat.completions.create(
            model=CENTS_MODEL, messages=ASK, max_tokens=15
        )
    assert failed.value.status_code == 502
    run = await gw.runs.load(state.run_id)
    assert run.committed.micro_usd == 15 * CENT and run.steps[0].usage_estimated


async def test_the_sweeper_settles_a_reservation_a_dead_gateway_left_open(
    gw: Gateway,
) -> None:
    """A gateway that dies mid-call leaves a BudgetReserved and nothing else. Once it is
    older than any call may last, the sweeper settles it at its amount; a young one stays."""
    state, _token = await gw.start_run(budget_micro_usd=30 * CENT)
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    state = await gw.runs.append(
        state,
        [ev.BudgetReserved(reservation_id="lost", amount_micro_usd=30 * CENT,
                           input_tokens=100, output_tokens=30, at=long_ago)],
    )  # fmt: skip
    other, _ = await gw.start_run(budget_micro_usd=30 * CENT)
    await gw.runs.append(
        other, [ev.BudgetReserved(reservation_id="young", amount_micro_usd=CENT, input_tokens=1)]
    )
    queue = RunQueue(connect(REDIS_URL))
    sweeper = Sweeper(gw.api.app[keys.STORE], queue, stale_reservation_after=600)
    try:
        assert await sweeper.settle_stale_reservations() == 0  # quiet for too short a time
        await age_summaries(gw)
        assert await sweeper.settle_stale_reservations() == 1
        assert await sweeper.settle_stale_reservations() == 0  # once
    finally:
        await sweeper.queue.redis.aclose()
    run = await gw.runs.load(state.run_id)
    settled = settlements(await events_of(gw, state.run_id))
    assert len(settled) == 1 and settled[0].stale and settled[0].usage_estimated
    assert run.committed.micro_usd == 30 * CENT and run.reservations == ()
    assert run.status == "budget_exceeded"
    young = await gw.runs.load(other.run_id)
    assert len(young.reservations) == 1 and young.status == "running"


async def age_summaries(gw: Gateway) -> None:
    """Two hours pass with no append to any run."""
    await gw.api.app[keys.STORE].pool.execute(
        "UPDATE stream_summaries SET updated_at = now() - interval '2 hours'"
    )
