"""A runtime report is recorded once, however often the runtime has to send it.

The in-container runtime retries a call whose answer it did not get (the connection dropped,
a 5xx during a restart), but the control plane may have recorded it already. Each call
carries an ``Idempotency-Key``, the same on every retry: a retried report appends nothing
again, and a retried question gets the first answer instead of moving the replayer on to the
next recorded call (issue 14 §7).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from papayya import runtokens
from papayya.domain import events as ev
from papayya.runtime.client import RuntimeClient
from tests.support.cloud import Cloud, running_cloud
from tests.support.exactly_once import ONE_CALL, Proxy, proxy_to, start_attempt
from web import keys

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False) as running:
        await running.register("once", ONE_CALL)
        yield running


@pytest.fixture
async def proxy(cloud: Cloud) -> AsyncIterator[Proxy]:
    """The control plane as the runtime reaches it, through a link that can lose answers."""
    url = urlsplit(cloud.url)
    async with proxy_to(url.hostname or "127.0.0.1", url.port or 80) as found:
        yield found


def runtime(proxy: Proxy, token: str) -> RuntimeClient:
    return RuntimeClient(f"http://127.0.0.1:{proxy.port}", token)


async def post(client: RuntimeClient, path: str, body: dict[str, Any]) -> Any:
    """``client.post`` in a thread of its own, as the runtime calls it, closed after."""

    def once() -> Any:
        try:
            return client.post(path, body)
        finally:
            client.close()

    return await asyncio.to_thread(once)


async def test_a_checkpoint_whose_answer_was_lost_is_recorded_once(
    cloud: Cloud, proxy: Proxy
) -> None:
    run_id, token = await start_attempt(cloud, "once")
    client = runtime(proxy, token)
    proxy.lose_answers = 1  # recorded, then the connection drops before the answer
    body = {"label": "nap0", "result": 7, "duration_ms": 1.0}
    answer = await post(client, "tasks/result", body)
    assert answer["status"] == "running"

    events = await cloud.runs.events(run_id)
    saved = [e for e in events if isinstance(e, ev.CheckpointSaved)]
    assert [(e.label, e.result) for e in saved] == [("nap0", 7)]
    assert (await cloud.runs.load(run_id)).next_step == 1


async def test_a_completion_whose_answer_was_lost_is_not_refused_on_retry(
    cloud: Cloud, proxy: Proxy
) -> None:
    run_id, token = await start_attempt(cloud, "once")
    proxy.lose_answers = 1
    answer = await post(runtime(proxy, token), "complete", {"output": "done"})
    assert answer["status"] == "completed"
    events = await cloud.runs.events(run_id)
    assert len([e for e in events if isinstance(e, ev.RunCompleted)]) == 1


async def test_a_resumed_question_whose_answer_was_lost_gets_the_same_answer(
    cloud: Cloud, proxy: Proxy
) -> None:
    run_id, first = await start_attempt(cloud, "once")
    for i in range(2):
        await post(
            runtime(proxy, first),
            "tasks/result",
            {"label": f"nap{i}", "result": i, "duration_ms": 1.0},
        )
    state = await cloud.runs.load(run_id)
    lost = [ev.AttemptLost(attempt=1, reason="agent_exit_137"), ev.RunStarted(attempt=2)]
    await cloud.runs.append(state, lost)
    second = runtime(proxy, runtokens.mint(cloud.app[keys.RUN_TOKEN_SECRET], run_id, 2))

    proxy.lose_answers = 1  # the replayer answered nap0, but the runtime never heard it
    nap0 = await post(second, "tasks", {"label": "nap0"})
    nap1 = await post(second, "tasks", {"label": "nap1"})
    assert (nap0, nap1) == ({"recorded": True, "result": 0}, {"recorded": True, "result": 1})


async def test_an_idempotency_key_that_is_not_printable_is_refused(cloud: Cloud) -> None:
    run_id, token = await start_attempt(cloud, "once")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "x" * 201}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{cloud.url}/v1/runtime/tasks/result",
            json={"label": "nap0", "duration_ms": 1.0},
            headers=headers,
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["code"]
    events = await cloud.runs.events(run_id)
    assert not [e for e in events if isinstance(e, ev.CheckpointSaved)]
