"""The SDK's HTTP mode meters model calls through the server's gateway with a run token:
priced, recorded, answered from the recording on resume, with the server's provider keys."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fakellm import FakeConfig, Usage
from papayya import papayya
from papayya.errors import BudgetExhausted, InvalidInput
from papayya.sdk import Papayya
from tests.support.gateway import PROVIDER_KEY, running_gateway
from tests.support.runs import project_everything
from web import keys

MODEL = "gpt-4o"
CLAUDE = "claude-3-5-haiku-20241022"
ASK: Any = [{"role": "user", "content": "x"}]
USAGE = Usage(prompt_tokens=100, completion_tokens=40)


def _no_user_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


async def test_http_mode_calls_go_through_the_gateway_and_resume_from_the_recording(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_user_keys(monkeypatch)
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:

        def agent() -> list[Any]:
            with papayya(base_url=gw.api.url, api_key=gw.api.key) as client:
                run = client.run("local-gw", run_id="g1", budget_usd="1")
                oa = run.openai()
                first = oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
                run.task("between", lambda: "a task between two model calls")()
                chunks = list(oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "more"}], stream=True
                ))  # fmt: skip
                an = run.anthropic()
                message = an.messages.create(model=CLAUDE, max_tokens=500, messages=ASK)
                assert chunks and message.content and first.choices[0].message.content
                return [first.choices[0].message.content, len(chunks)]

        await asyncio.to_thread(agent)
        assert gw.fake.stats.total == 3
        assert gw.fake.stats.by_api_key.get(PROVIDER_KEY) == 3  # the server's key, not the user's
        stored = f"{await gw.project_id()}:g1"
        state = await gw.runs.load(stored)
        kinds = [(s.step_type, s.status) for s in state.steps]
        assert kinds == [
            ("response", "completed"),
            ("checkpoint", "completed"),
            ("response", "completed"),  # a sync stream read to its end is a completed call
            ("response", "completed"),
        ]
        assert state.usage.cost_micro_usd > 0 and state.usage.output_tokens > 0

        def again() -> None:
            with papayya(base_url=gw.api.url, api_key=gw.api.key) as client:
                run = client.run("local-gw", run_id="g1")
                oa = run.openai()
                oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
                run.task("between", lambda: pytest.fail("a finished task ran again"))()
                list(oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "more"}], stream=True
                ))  # fmt: skip
                run.anthropic().messages.create(model=CLAUDE, max_tokens=500, messages=ASK)
                run.complete("done")

        await asyncio.to_thread(again)
        assert gw.fake.stats.total == 3  # every call answered from the recording
        assert (await gw.runs.load(stored)).status == "completed"


async def test_http_mode_budget_refuses_a_call_with_402(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_user_keys(monkeypatch)
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:

        def agent() -> str:
            import openai

            with papayya(base_url=gw.api.url, api_key=gw.api.key) as client:
                run = client.run("local-gw", run_id="g2", budget_usd="0.000001")
                try:
                    run.openai().chat.completions.create(
                        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
                    )
                except openai.APIStatusError as exc:
                    return str(exc.status_code)
                return "no refusal"

        assert await asyncio.to_thread(agent) == "402"
        assert gw.fake.stats.total == 0
        state = await gw.runs.load(f"{await gw.project_id()}:g2")
        assert state.status == "budget_exceeded"
        assert BudgetExhausted.http_status == 402


async def test_direct_mode_streams_read_to_the_end_are_completed_calls(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_user_keys(monkeypatch)
    async with running_gateway(dsn, monkeypatch, FakeConfig(usage=USAGE)) as gw:

        def agent() -> None:
            with papayya(dsn) as client:  # the server's keys come from PAPAYYA_OPENAI_*
                run = client.run("local-direct", run_id="d1")
                oa = run.openai()
                list(oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "a"}], stream=True
                ))  # fmt: skip
                with run.anthropic().messages.stream(
                    model=CLAUDE, max_tokens=100, messages=ASK
                ) as stream:
                    assert stream.get_final_message().content

        async def async_agent() -> None:
            with papayya(dsn) as client:
                run = client.run("local-direct", run_id="d1")
                oa = run.async_openai()
                chunks = await oa.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "b"}], stream=True
                )
                assert [c async for c in chunks]
                await oa.close()
                run.complete("done")

        await asyncio.to_thread(agent)
        await asyncio.to_thread(lambda: asyncio.run(async_agent()))
        state = await gw.runs.load("d1")
        assert [s.status for s in state.steps] == ["completed"] * 3
        assert gw.fake.stats.total == 3
        assert gw.fake.stats.by_api_key.get(PROVIDER_KEY) == 3


async def test_direct_mode_runs_belong_to_a_project_the_api_lists(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any
) -> None:
    async with running_gateway(dsn, monkeypatch) as gw:

        def agent() -> None:
            with papayya(dsn) as client:
                run = client.run("local-direct", run_id="seen-1")
                run.task("search", lambda: {"hits": 3})()
                run.complete("done")

        await asyncio.to_thread(agent)
        async with http.get(f"{gw.api.url}/v1/runs/seen-1", headers=gw.api.headers()) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["project_id"] == await gw.project_id()
        listed: list[str] = []
        for _ in range(100):  # reads are fenced by the server's oldest open transaction
            await project_everything(gw.api.app[keys.STORE], dsn)
            async with http.get(f"{gw.api.url}/v1/runs", headers=gw.api.headers()) as r:
                listed = [run["id"] for run in await r.json()]
            if listed:
                break
            await asyncio.sleep(0.1)
        assert listed == ["seen-1"]

        monkeypatch.setenv("PAPAYYA_PROJECT", "no-such-project")

        def elsewhere() -> str:
            with papayya(dsn) as client:
                try:
                    client.run("local-direct", run_id="seen-2")
                except InvalidInput as exc:
                    return str(exc)
            return "opened"

        assert "PAPAYYA_PROJECT" in await asyncio.to_thread(elsewhere)


@pytest.mark.parametrize("mode", ["direct", "http"])
async def test_record_cost_is_a_step_counted_against_the_budget_once(
    dsn: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    async with running_gateway(dsn, monkeypatch) as gw:

        def connect() -> Papayya:
            if mode == "http":
                return Papayya(base_url=gw.api.url, api_key=gw.api.key)
            return Papayya(dsn)

        def agent() -> str:
            with connect() as client:
                run = client.run("coster", run_id="c1", budget_usd="0.01")
                run.record_cost("0.004", label="search-api")
                try:
                    run.record_cost("0.004", label="search-api")
                    run.record_cost("0.004", label="search-api")
                except BudgetExhausted:
                    return run.status
                return "not exhausted"

        async def resumed() -> list[str | None]:
            async with connect() as client:
                run = client.run("coster", run_id="c1")
                return [s.label for s in run.state.steps]

        assert await asyncio.to_thread(agent) == "budget_exceeded"
        stored = f"{await gw.project_id()}:c1" if mode == "http" else "c1"
        state = await gw.runs.load(stored)
        assert [s.label for s in state.steps] == ["search-api", "search-api#2", "search-api#3"]
        assert state.committed.micro_usd == 12_000 and state.status == "budget_exceeded"
        labels = await asyncio.to_thread(lambda: asyncio.run(resumed()))
        assert labels == ["search-api", "search-api#2", "search-api#3"]


async def test_http_cost_posts_are_idempotent_on_their_label(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any
) -> None:
    async with running_gateway(dsn, monkeypatch) as gw:

        def opened() -> None:
            with papayya(base_url=gw.api.url, api_key=gw.api.key) as client:
                client.run("coster", run_id="c2")

        await asyncio.to_thread(opened)
        url = f"{gw.api.url}/v1/durable/runs/c2/costs"
        for _ in range(2):  # a retry of the same post counts nothing more
            body = {"label": "search-api", "cost_micro_usd": 500}
            async with http.post(url, json=body, headers=gw.api.headers()) as r:
                assert r.status == 200, await r.text()
        for bad in ({"label": "", "cost_micro_usd": 1}, {"label": "x", "cost_micro_usd": -1}):
            async with http.post(url, json=bad, headers=gw.api.headers()) as r:
                assert r.status == 400, await r.text()
        state = await gw.runs.load(f"{await gw.project_id()}:c2")
        assert len(state.steps) == 1 and state.committed.micro_usd == 500
