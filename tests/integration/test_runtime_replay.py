"""A replay's tool calls before its from_step are answered from the source's recording."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from papayya.domain import events as ev
from tests.support.gateway import running_gateway


async def post(http: aiohttp.ClientSession, url: str, token: str, body: Any) -> Any:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def test_replay_answers_tool_calls_from_the_source(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(dsn, monkeypatch) as gw, aiohttp.ClientSession() as http:
        url = f"{gw.api.url}/v1/runtime"
        source, token = await gw.start_run()
        call = {"tool": "search", "arguments": {"q": "x"}}
        assert (await post(http, f"{url}/tool-calls", token, call))["recorded"] is False
        await post(http, f"{url}/tool-calls/result", token, {**call, "output": {"hits": 3}})
        state = await gw.runs.load(source.run_id)
        await gw.runs.append(state, [ev.RunCompleted(output="done")])

        replay, replay_token = await gw.start_run(replayed_from=source.run_id, replay_from_step=1)
        answer = await post(http, f"{url}/tool-calls", replay_token, call)
        assert answer == {"recorded": True, "output": {"hits": 3}}
        # From step 1 on the replay runs live: the source's step 0 is the only one answered.
        later, later_token = await gw.start_run(replayed_from=source.run_id, replay_from_step=0)
        assert (await post(http, f"{url}/tool-calls", later_token, call))["recorded"] is False
        assert replay.run_id != later.run_id
