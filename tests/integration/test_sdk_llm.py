"""The local path: official SDK clients metered into a local run (run.openai() and friends)."""

from __future__ import annotations

import asyncio

from fakellm import FakeConfig, Usage
from fakellm.testing import running_fake
from papayya import papayya
from papayya.pricing import Tokens, prices_for

MODEL = "gpt-4o"
USAGE = Usage(prompt_tokens=100, completion_tokens=40)
# A priced model: every run has a budget (its project's default if nothing else), and an
# unpriced model is refused in a budgeted run.
CLAUDE = "claude-3-5-haiku-latest"


async def test_openai_and_anthropic_calls_are_steps_with_costs(dsn: str) -> None:
    async with running_fake(FakeConfig(usage=USAGE)) as fake:

        def agent() -> tuple[str, str, int]:
            with papayya(dsn) as client:
                run = client.run("local-llm", run_id="llm-1")
                oa = run.openai(base_url=fake.openai_base_url, api_key="sk-user")
                first = oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
                run.task("between", lambda: "a task between two model calls")()
                chunks = list(oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "more"}], stream=True
                ))  # fmt: skip
                an = run.anthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-user")
                message = an.messages.create(
                    model=CLAUDE, max_tokens=500, messages=[{"role": "user", "content": "x"}]
                )
                run.refresh()
                run.complete("done")
                assert chunks and message.content
                return first.choices[0].message.content or "", run.status, len(run.state.steps)

        text, status, steps = await asyncio.to_thread(agent)
        assert text and status == "completed" and steps == 4
        assert fake.stats.total == 3
        assert fake.stats.by_api_key.get("sk-user") == 2  # the caller's own key upstream

        def resume() -> int:
            with papayya(dsn) as client:
                run = client.run("local-llm", run_id="llm-1")
                oa = run.openai(base_url=fake.openai_base_url, api_key="sk-user")
                oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
                return len(run.refresh().steps)

        assert await asyncio.to_thread(resume) == 4
        assert fake.stats.total == 3  # the finished call was answered from the recording

    from eventstore import PostgresEventStore
    from papayya.runs import Runs

    store = await PostgresEventStore.connect(dsn)
    try:
        state = await Runs(store).load("llm-1")
    finally:
        await store.close()
    prices = prices_for("openai", MODEL)
    assert prices is not None
    one = prices.cost_micro_usd(Tokens(input_tokens=100, output_tokens=40))
    assert [s.step_type for s in state.steps] == ["response", "checkpoint", "response", "response"]
    assert state.steps[0].usage.cost_micro_usd == one == state.steps[2].usage.cost_micro_usd
    claude = prices_for("anthropic", CLAUDE)
    assert claude is not None
    assert state.steps[3].usage.cost_micro_usd == claude.cost_micro_usd(
        Tokens(input_tokens=100, output_tokens=40)
    )
    # The project's budget; a durable run's steps (its own checkpoints) get no step default.
    assert state.budget.micro_usd == 5_000_000 and state.max_steps is None


async def test_an_unpriced_model_is_refused_before_the_provider_in_a_defaulted_run(
    dsn: str,
) -> None:
    import openai
    import pytest

    async with running_fake(FakeConfig(usage=USAGE)) as fake:
        with papayya(dsn) as client:
            run = client.run("local-llm", run_id="llm-unpriced")
            oa = run.async_openai(base_url=fake.openai_base_url, api_key="sk-user")
            with pytest.raises(openai.BadRequestError) as refused:
                await oa.chat.completions.create(
                    model="house-model", messages=[{"role": "user", "content": "hi"}]
                )
            await oa.close()
            error = refused.value.response.json()["error"]
            assert error["code"] == "model_not_priced" and "rate-card" in error["message"]
            assert run.refresh().status == "running" and run.state.steps == ()
        assert fake.stats.total == 0


async def test_async_client_and_budget(dsn: str) -> None:
    import openai
    import pytest

    async with running_fake(FakeConfig(usage=USAGE)) as fake:
        with papayya(dsn) as client:
            run = client.run("local-llm", run_id="llm-2", budget_usd="0.000001")
            oa = run.async_openai(base_url=fake.openai_base_url, api_key="sk-user")
            with pytest.raises(openai.APIStatusError) as refused:
                await oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
            assert refused.value.status_code == 402
            assert run.refresh().status == "budget_exceeded"
            await oa.close()
        assert fake.stats.total == 0
