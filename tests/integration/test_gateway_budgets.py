"""Hard budgets, step limits, loop detection and replay through the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import openai
import pytest

from fakellm import FakeConfig, Latency, Reply, ToolCall, Usage
from papayya.domain import events as ev
from papayya.runs import Runs
from tests.support.gateway import Gateway, running_gateway
from web import keys

MODEL = "gpt-4o"
ASK = [{"role": "user", "content": "how much?"}]


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    config = FakeConfig(usage=Usage(prompt_tokens=50, completion_tokens=20),
                        latency=Latency(first_byte=0.3))  # fmt: skip
    async with running_gateway(dsn, monkeypatch, config) as gateway:
        yield gateway
        for client in gateway.clients:
            await client.close()


async def last_reservation(gw: Gateway) -> ev.BudgetReserved:
    """The reservation of the call ``reservation_of_one_call`` made (its run is the last)."""
    state, token = await gw.start_run(budget_micro_usd=10**9)
    await gw.openai(token).chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    events = await gw.runs.events(state.run_id)
    return next(e for e in events if isinstance(e, ev.BudgetReserved))


async def reservation_of_one_call(gw: Gateway) -> int:
    state, token = await gw.start_run(budget_micro_usd=10**9)
    await gw.openai(token).chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    events = await gw.runs.events(state.run_id)
    return next(e.amount_micro_usd for e in events if isinstance(e, ev.BudgetReserved))


async def test_concurrent_calls_never_pass_the_budget(gw: Gateway) -> None:
    one = await reservation_of_one_call(gw)
    # Each call then costs exactly what it reserved, so a call that settles frees nothing
    # and exactly 10 fit however the 50 interleave (else an 11th may rightly fit once some
    # settled below their reservation: a timing the machine's load decides).
    reserved = await last_reservation(gw)
    gw.fake.configure(
        usage={"prompt_tokens": reserved.input_tokens, "completion_tokens": reserved.output_tokens}
    )
    before = gw.fake.stats.total
    budget = 10 * one + one // 2
    state, token = await gw.start_run(budget_micro_usd=budget)
    client = gw.openai(token)
    results = await asyncio.gather(
        *(client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
          for _ in range(50)),
        return_exceptions=True,
    )  # fmt: skip
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError) and r.status_code == 402]
    # Calls that arrive after the run has ended find its token dead (401): refused all the same.
    late = [r for r in results if isinstance(r, openai.AuthenticationError)]
    assert len(ok) == 10 and refused and len(refused) + len(late) == 40
    assert gw.fake.stats.total - before == 10  # exactly the admitted calls reached the provider
    assert refused[0].response.headers["x-should-retry"] == "false"
    run = await gw.runs.load(state.run_id)
    assert run.status == "budget_exceeded"
    assert run.committed.micro_usd <= budget and run.reservations == ()
    assert run.committed.micro_usd == 10 * one  # each cost exactly its reservation
    assert len(run.steps) == 10


async def test_refused_call_then_resume_with_a_larger_budget(gw: Gateway) -> None:
    one = await reservation_of_one_call(gw)
    before = gw.fake.stats.total
    state, token = await gw.start_run(budget_micro_usd=one - 1)
    with pytest.raises(openai.APIStatusError) as refused:
        await gw.openai(token).chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    assert refused.value.status_code == 402
    assert gw.fake.stats.total == before  # never sent upstream
    run = await gw.runs.load(state.run_id)
    assert run.status == "budget_exceeded"
    import aiohttp

    async with aiohttp.ClientSession() as http:
        url = f"{gw.api.url}/v1/runs/{state.run_id}/resume"
        async with http.post(url, json={"budget_cents": 0}, headers=gw.api.headers()) as resp:
            assert resp.status in (400, 409)  # not above what is already held
        cents = 10 * one // 10_000 + 1
        async with http.post(url, json={"budget_cents": cents}, headers=gw.api.headers()) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["status"] == "queued"
    run = await gw.runs.load(state.run_id)
    run = await gw.runs.append(run, [ev.RunStarted(attempt=2)])  # a worker picks it up
    client = gw.openai(gw.token(state.run_id, 2))
    await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    run = await gw.runs.load(state.run_id)
    run = await gw.runs.append(run, [ev.RunCompleted(output="ok")])
    assert run.status == "completed" and len(run.steps) == 1


async def test_token_budget_injects_an_output_cap(gw: Gateway) -> None:
    _state, token = await gw.start_run(budget_output_tokens=40)
    await gw.openai(token).chat.completions.create(model=MODEL, messages=ASK)
    sent = gw.fake.stats.last
    assert sent is not None and sent.body["max_completion_tokens"] == 40


async def test_max_steps_ends_the_run(gw: Gateway) -> None:
    state, token = await gw.start_run(max_steps=2)
    client = gw.openai(token)
    for _ in range(2):
        await client.chat.completions.create(model=MODEL, messages=ASK)
    with pytest.raises(openai.BadRequestError, match="max_steps"):
        await client.chat.completions.create(model=MODEL, messages=ASK)
    run = await gw.runs.load(state.run_id)
    assert run.status == "failed" and run.error_code == "max_steps_exceeded"


async def test_the_same_tool_call_five_times_is_a_loop(gw: Gateway) -> None:
    state, token = await gw.start_run()
    client = gw.openai(token)
    for _ in range(5):
        gw.fake.script.append(Reply(tool_calls=[ToolCall("search", {"q": "same"})]))
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    for _ in range(5):
        await client.chat.completions.create(model=MODEL, messages=ASK, tools=tools)
    run = await gw.runs.load(state.run_id)
    assert run.status == "failed" and run.error_code == "loop_detected"
    with pytest.raises(openai.AuthenticationError):  # the token died with the run
        await client.chat.completions.create(model=MODEL, messages=ASK, tools=tools)


async def test_replay_answers_steps_before_n_without_the_provider(gw: Gateway) -> None:
    source, token = await gw.start_run()
    client = gw.openai(token)
    questions = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    originals = [
        (await client.chat.completions.create(model=MODEL, messages=q)).model_dump_json()
        for q in questions
    ]
    await gw.runs.append(await gw.runs.load(source.run_id), [ev.RunCompleted()])
    before = gw.fake.stats.total
    replay, replay_token = await gw.start_run(replayed_from=source.run_id, replay_from_step=2)
    again = gw.openai(replay_token)
    answers = [
        (await again.chat.completions.create(model=MODEL, messages=q)).model_dump_json()
        for q in questions
    ]
    assert gw.fake.stats.total - before == 1  # only step 2 ran live
    assert answers[:2] == originals[:2]  # the same bytes, from the recording
    run = await gw.runs.load(replay.run_id)
    assert [s.usage.cost_micro_usd > 0 for s in run.steps] == [False, False, True]
    assert len(run.steps) == 3


async def test_resume_after_a_crash_does_not_repeat_finished_calls(gw: Gateway) -> None:
    state, token = await gw.start_run()
    client = gw.openai(token)
    for q in ("a", "b"):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}])
    before = gw.fake.stats.total
    run = await gw.runs.append(await gw.runs.load(state.run_id), [ev.RunStarted(attempt=2)])
    again = gw.openai(gw.token(state.run_id, 2))
    for q in ("a", "b", "c"):
        await again.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": q}])
    assert gw.fake.stats.total - before == 1
    run = await gw.runs.load(state.run_id)
    assert len(run.steps) == 3 and run.diverged_at_step is None


# -- another process writes to the run behind the gateway's back ------------------------------
# The gateway decides a live call on the run state it holds, without reading the stream first;
# these runs are moved on by another writer (a plain ``Runs`` on the same store: no shared
# cache, as in another API process or a worker), so the state it holds is behind.


async def behind_the_gateways_back(gw: Gateway, run_id: str, events: list[ev.RunEvent]) -> None:
    other = Runs(gw.api.app[keys.STORE])
    state = await other.append(await other.load(run_id), events)
    held = gw.runs.cached(run_id)
    assert held is not None and held.state.version < state.version  # the gateway is behind


async def costs_exactly_its_reservation(gw: Gateway) -> int:
    """What one call reserves; from now on each call costs exactly that."""
    reserved = await last_reservation(gw)
    gw.fake.configure(
        usage={"prompt_tokens": reserved.input_tokens, "completion_tokens": reserved.output_tokens}
    )
    return reserved.amount_micro_usd


async def test_a_reservation_made_elsewhere_is_seen_before_the_provider_is_called(
    gw: Gateway,
) -> None:
    one = await reservation_of_one_call(gw)
    budget = 3 * one
    state, token = await gw.start_run(budget_micro_usd=budget)
    client = gw.openai(token)
    await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    spent = (await gw.runs.load(state.run_id)).committed.micro_usd
    # Another process's call holds all but a call's worth, less one micro-dollar.
    held = budget - spent - one + 1
    await behind_the_gateways_back(
        gw, state.run_id, [ev.BudgetReserved(reservation_id="elsewhere", amount_micro_usd=held)]
    )
    before = gw.fake.stats.total
    with pytest.raises(openai.APIStatusError) as refused:
        await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    assert refused.value.status_code == 402
    assert gw.fake.stats.total == before  # never sent upstream
    run = await Runs(gw.api.app[keys.STORE]).load(state.run_id)
    assert run.committed.micro_usd + run.reserved.micro_usd <= budget
    assert [r.reservation_id for r in run.reservations] == ["elsewhere"] and len(run.steps) == 1


async def test_a_settlement_made_elsewhere_frees_the_budget_for_the_next_call(
    gw: Gateway,
) -> None:
    one = await costs_exactly_its_reservation(gw)
    elsewhere = one
    budget = elsewhere + 3 * one - 1
    state, token = await gw.start_run(budget_micro_usd=budget)
    client = gw.openai(token)
    await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    reserve = ev.BudgetReserved(reservation_id="elsewhere", amount_micro_usd=elsewhere)
    await behind_the_gateways_back(gw, state.run_id, [reserve])
    # Seen on its append's version check: held 2 calls' worth, so a third still fits.
    await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    held = gw.runs.cached(state.run_id)
    assert held is not None and held.state.reserved.micro_usd == elsewhere
    # The gateway now holds a state on which a next call does not fit (one micro-dollar
    # short); the other process settles for nothing, which frees the call's worth.
    await behind_the_gateways_back(
        gw, state.run_id, [ev.BudgetSettled(reservation_id="elsewhere", actual_micro_usd=0)]
    )
    before = gw.fake.stats.total
    await client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=100)
    assert gw.fake.stats.total == before + 1
    run = await Runs(gw.api.app[keys.STORE]).load(state.run_id)
    assert run.status == "running" and len(run.steps) == 3
    assert run.committed.micro_usd == 3 * one <= budget and run.reservations == ()


async def test_an_attempt_started_elsewhere_kills_the_old_token_at_once(gw: Gateway) -> None:
    state, token = await gw.start_run()
    old = gw.openai(token)
    await old.chat.completions.create(model=MODEL, messages=ASK)
    await behind_the_gateways_back(gw, state.run_id, [ev.RunStarted(attempt=2)])
    before = gw.fake.stats.total
    with pytest.raises(openai.AuthenticationError):
        await old.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert gw.fake.stats.total == before  # never sent upstream
    new = gw.openai(gw.token(state.run_id, 2))
    await new.chat.completions.create(model=MODEL, messages=ASK)  # answered from the recording
    await new.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "y"}])
    assert gw.fake.stats.total == before + 1
    run = await Runs(gw.api.app[keys.STORE]).load(state.run_id)
    # The recorded answer adds no step (a resume goes on after its recording).
    assert run.attempt == 2 and len(run.steps) == 2 and run.reservations == ()
