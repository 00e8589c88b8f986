"""``/metrics`` describes every project, so it is not public: on the API's port it needs the
metrics token (``PAPAYYA_METRICS_TOKEN`` as a Bearer token), or it is served on an address of
its own (``PAPAYYA_METRICS_LISTEN``); with neither it answers 404. Its labels stay bounded
whatever names clients choose: an agent that was never defined and a model the price table
does not know get no series of their own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from papayya.domain import events as ev
from papayya.errors import InvalidInput
from tests.support.api import Api
from tests.support.serving import call, serving
from web import keys

pytestmark = pytest.mark.timeout(120)

TOKEN = "metrics-" + uuid.uuid4().hex
BEARER = {"Authorization": f"Bearer {TOKEN}"}


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with http.get(url, headers=headers) as response:
        return response.status, await response.text()


async def refused(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with http.get(url, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        body = await response.json()
        assert set(body["error"]) == {"code", "message"}, body
        return response.status, body["error"]


async def test_without_a_token_or_an_address_metrics_are_not_served(
    api: Api, http: aiohttp.ClientSession
) -> None:
    for headers in ({}, api.headers(), {"Authorization": f"Bearer {api.key}"}):
        status, error = await refused(http, api.url + "/metrics", headers)
        assert status == 404 and "PAPAYYA_METRICS_TOKEN" in error["message"], error


async def test_the_api_port_serves_metrics_only_with_the_token(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with serving(dsn, monkeypatch, metrics_token=TOKEN) as api:
        url = api.url + "/metrics"
        for headers in (
            {},
            api.headers(),  # an API key is not the metrics token
            {"Authorization": f"Bearer {api.key}"},
            {"Authorization": f"Bearer {TOKEN[:-1]}"},
            {"Authorization": f"Basic {TOKEN}"},
        ):
            status, error = await refused(http, url, headers)
            assert status == 401 and error["code"] == "unauthorized", (headers, error)
        status, text = await get(http, url, BEARER)
        assert status == 200 and "papayya_runs_total" in text


async def test_a_listen_address_of_its_own_serves_metrics_and_the_api_port_does_not(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with serving(dsn, monkeypatch, metrics_listen="127.0.0.1:0") as api:
        status, text = await get(http, api.app[keys.METRICS_URL], {})
        assert status == 200 and "papayya_runs_total" in text
        status, _ = await refused(http, api.url + "/metrics", BEARER)
        assert status == 404


async def test_a_weak_token_or_a_bad_address_fails_the_start(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for config in (
        {"metrics_token": "short"},
        {"metrics_listen": "9464"},
        {"metrics_listen": "127.0.0.1:http"},
    ):
        with pytest.raises(InvalidInput, match="PAPAYYA_METRICS"):
            async with serving(dsn, monkeypatch, **config):
                pass


def label_values(text: str) -> dict[str, set[str]]:
    """Each label's values over the families the hostile client can reach."""
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("papayya_runs", "papayya_llm_tokens", "papayya_llm_cost_usd"):
            for sample in family.samples:
                for name, value in sample.labels.items():
                    values.setdefault(name, set()).add(value)
    return values


async def test_labels_stay_bounded_whatever_names_clients_choose(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with serving(dsn, monkeypatch, metrics_token=TOKEN) as api:
        status, agent = await call(
            http, api, "POST", "/v1/agents", {"name": "real", "slug": "real", "config": {}}
        )
        assert status == 201
        _, before = await get(http, api.url + "/metrics", BEARER)
        runs = api.app[keys.RUNS]
        n = 40
        names = [f"attacker-{uuid.uuid4().hex}" for _ in range(n)]
        for i, name in enumerate(names):
            # A durable run under an agent name of the client's choosing ...
            status, doc = await call(
                http, api, "POST", "/v1/durable/runs", {"run_id": f"r{i}", "agent": name}
            )
            assert status == 201, doc
            state = await runs.load(doc["id"])
            # ... whose model call reports a model name of anyone's choosing ...
            call_event = ev.LlmCallRecorded(
                step_number=0, provider="openai", model=name, fingerprint="f",
                input_tokens=1, output_tokens=1, cost_micro_usd=1,
            )  # fmt: skip
            step = [ev.StepStarted(step_number=0, step_type="response"), call_event]
            state = await runs.append(state, [*step, ev.StepCompleted(step_number=0)])
            await runs.append(state, [ev.RunCompleted()])
            # ... and its replay queued through the API, under the same name.
            status, replay = await call(
                http, api, "POST", f"/v1/runs/{doc['id']}/replay", {"from_step": 0}
            )
            assert status in (200, 201), replay
            await runs.append(await runs.load(replay["id"]), [ev.RunCancelled(reason="x")])
        # A defined agent's run, with a model of the price table, keeps its own labels.
        status, queued = await call(http, api, "POST", "/v1/runs", {"agent_id": agent["id"]})
        assert status == 201, queued
        await runs.append(await runs.load(queued["id"]), [ev.RunCancelled(reason="x")])

        def counted(text: str, agent: str, status: str) -> float:
            return sum(
                s.value
                for family in text_string_to_metric_families(text)
                if family.name == "papayya_runs"
                for s in family.samples
                if s.name == "papayya_runs_total" and s.labels == {"agent": agent, "status": status}
            )

        deadline = asyncio.get_running_loop().time() + 30
        while True:
            _, after = await get(http, api.url + "/metrics", BEARER)
            done = (
                counted(after, "durable", "completed") - counted(before, "durable", "completed"),
                counted(after, "other", "cancelled") - counted(before, "other", "cancelled"),
                counted(after, agent["id"], "cancelled"),
            )
            if done == (n, n, 1):
                break
            assert asyncio.get_running_loop().time() < deadline, done
            await asyncio.sleep(0.1)
        assert not any(name in after for name in names)
        values = label_values(after)
        assert {"durable", "other", agent["id"]} <= values["agent"]
        assert "other" in values["model"]
