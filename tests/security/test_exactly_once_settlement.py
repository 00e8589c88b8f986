"""A model call the provider answered is recorded once, even if the store restarts meanwhile.

When Postgres restarts while the provider is answering, the gateway cannot append the call's
settlement at first. It holds the provider's answer and tries the settlement again until it
commits: answering 5xx instead would make the caller's SDK send the call again, and the
provider would be paid twice for a call recorded once (issue 14 §7).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import openai
import pytest

from eventstore.postgres import _translate_errors
from fakellm import FakeConfig
from fakellm.config import Latency
from papayya.domain import events as ev
from papayya.errors import StoreUnavailable
from tests.support.cloud import Cloud, running_cloud
from tests.support.exactly_once import (
    ONE_CALL,
    Proxy,
    live_calls,
    provider_calls,
    proxied,
    start_attempt,
    wait_event,
)

pytestmark = pytest.mark.timeout(90)

PROVIDER_SECONDS = 1.5
OUTAGE_SECONDS = 3.0  # the provider answers in the middle of it


@pytest.fixture
async def through_proxy(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[Cloud, Proxy]]:
    slow = FakeConfig(latency=Latency(first_byte=PROVIDER_SECONDS))
    async with (
        proxied(dsn) as (proxy, via),
        running_cloud(via, monkeypatch, tmp_path, slow, worker=False) as cloud,
    ):
        await cloud.register("once", ONE_CALL)
        yield cloud, proxy


@pytest.mark.parametrize("stream", [False, True])
async def test_a_call_answered_during_a_postgres_restart_is_paid_once(
    through_proxy: tuple[Cloud, Proxy], stream: bool
) -> None:
    cloud, proxy = through_proxy
    run_id, token = await start_attempt(cloud, "once", budget_cents=100)
    # The SDK retries what fails with a 5xx, as agents' SDKs do.
    client = openai.AsyncOpenAI(base_url=f"{cloud.url}/v1/llm/openai", api_key=token, max_retries=5)

    async def ask() -> str:
        messages = [{"role": "user", "content": "hello"}]
        if not stream:
            answer = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            return str(answer.choices[0].message.content)
        chunks = await client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])

    call = asyncio.create_task(ask())
    await wait_event(cloud.runs, run_id, ev.BudgetReserved)
    proxy.cut()  # Postgres goes away while the provider is answering
    await asyncio.sleep(OUTAGE_SECONDS)
    proxy.restore()
    text = await asyncio.wait_for(call, 60)
    await client.close()

    assert text
    # (A stream settles after its last event: the caller may have it all before that.)
    events = await wait_event(cloud.runs, run_id, ev.BudgetSettled)
    assert provider_calls(cloud) == 1
    (recorded,) = live_calls(events)
    state = await cloud.runs.load(run_id)
    assert not state.reservations and state.committed.micro_usd == recorded.cost_micro_usd > 0


def test_a_connection_a_restart_left_mid_operation_counts_as_the_store_being_away() -> None:
    """Seen under chaos: asyncpg's "cannot switch to state" after a Postgres restart escaped
    as a 500, so the gateway neither retried the settlement nor released its reservation."""
    with pytest.raises(StoreUnavailable), _translate_errors():
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")
