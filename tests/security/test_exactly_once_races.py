"""What a lost attempt still had on its way lands nowhere once the next attempt has started.

The recovery (the worker or the sweeper) can end an attempt while one of its appends is in
flight: a report of the runtime API, or a reservation at the gateway. That append then loses
the race for the stream's version and is decided again on the fresher state, where the next
attempt is running: it must be refused there, not recorded as the next attempt's step
(issue 14 §7).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from papayya.domain import events as ev
from tests.support.cloud import Cloud, running_cloud
from tests.support.exactly_once import (
    ONE_CALL,
    provider_calls,
    recovering,
    start_attempt,
    wait_blocked,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as running:
        await running.register("once", ONE_CALL)
        yield running


async def test_a_checkpoint_reported_as_its_attempt_is_lost_is_refused(cloud: Cloud) -> None:
    run_id, token = await start_attempt(cloud, "once")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"label": "nap0", "result": 0, "duration_ms": 1.0}
    async with aiohttp.ClientSession() as http:
        async with recovering(cloud, run_id):
            url = f"{cloud.url}/v1/runtime/tasks/result"
            report = asyncio.create_task(http.post(url, json=body, headers=headers))
            await wait_blocked(cloud)
        async with await report as response:
            assert response.status == 401, await response.text()

    events = await cloud.runs.events(run_id)
    assert not [e for e in events if isinstance(e, ev.CheckpointSaved | ev.StepStarted)]
    assert (await cloud.runs.load(run_id)).attempt == 2


async def test_a_model_call_made_as_its_attempt_is_lost_is_refused(cloud: Cloud) -> None:
    run_id, token = await start_attempt(cloud, "once")
    client = openai.AsyncOpenAI(base_url=f"{cloud.url}/v1/llm/openai", api_key=token, max_retries=0)
    async with recovering(cloud, run_id):
        call = asyncio.create_task(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        )
        await wait_blocked(cloud)
    with pytest.raises(openai.AuthenticationError):
        await call
    await client.close()

    assert provider_calls(cloud) == 0
    events = await cloud.runs.events(run_id)
    assert not [e for e in events if isinstance(e, ev.BudgetReserved | ev.LlmCallRecorded)]
