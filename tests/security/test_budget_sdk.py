"""Direct mode (``run.openai()``): a synchronous stream read to its end is a completed step,
answered from the recording on resume, not paid again (issue 14 §6); a call in flight when
the process died counts in full when the run resumes (§3)."""

from __future__ import annotations

import asyncio

from eventstore import PostgresEventStore
from fakellm import FakeConfig, Usage
from fakellm.testing import running_fake
from papayya import papayya
from papayya.domain import events as ev
from papayya.runs import Runs

ASK = [{"role": "user", "content": "stream it"}]


async def test_a_finished_sync_stream_is_recorded_and_not_paid_again(dsn: str) -> None:
    config = FakeConfig(usage=Usage(prompt_tokens=100, completion_tokens=40))
    async with running_fake(config) as fake:

        def agent() -> list[str]:
            with papayya(dsn) as client:
                run = client.run("local-llm", run_id="sync-stream")
                oa = run.openai(base_url=fake.openai_base_url, api_key="sk-user")
                stream = oa.chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
                return [c.choices[0].delta.content or "" for c in stream if c.choices]

        first = await asyncio.to_thread(agent)
        assert "".join(first) and fake.stats.total == 1
        again = await asyncio.to_thread(agent)  # the process restarts: a resume
        assert again == first and fake.stats.total == 1  # answered from the recording

    store = await PostgresEventStore.connect(dsn)
    try:
        state = await Runs(store).load("sync-stream")
    finally:
        await store.close()
    assert [s.status for s in state.steps] == ["completed"]
    assert state.steps[0].usage.output_tokens == 40 and not state.steps[0].usage_estimated


async def test_a_call_in_flight_when_the_process_died_counts_in_full_on_resume(dsn: str) -> None:
    def start() -> None:
        with papayya(dsn) as client:
            client.run("local-llm", run_id="died-mid-call", budget_usd="1")

    await asyncio.to_thread(start)
    store = await PostgresEventStore.connect(dsn)
    try:
        runs = Runs(store)
        # What the process left when it died mid-call: a reservation and nothing else.
        held = ev.BudgetReserved(
            reservation_id="lost", amount_micro_usd=250_000, input_tokens=300, output_tokens=40
        )
        await runs.append(await runs.load("died-mid-call"), [held])
        await asyncio.to_thread(start)  # the process restarts: a resume
        state = await runs.load("died-mid-call")
        settled = [e for e in await runs.events("died-mid-call") if isinstance(e, ev.BudgetSettled)]
    finally:
        await store.close()
    assert state.reservations == () and state.committed.micro_usd == 250_000
    assert len(settled) == 1 and settled[0].stale and settled[0].usage_estimated
    assert state.status == "running" and state.attempt == 2
