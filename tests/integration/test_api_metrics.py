"""``GET /metrics`` over a real server: the names, counters that follow the event store, gauges
from the read tables, and no run id in any label. (Who may scrape, and the labels' bounds
against hostile clients: ``tests/security/test_metrics_access.py``.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from papayya.runs import Runs
from tests.support.api import Api, default_project
from tests.support.runs import append, checkpoint_step, llm_step, project_everything, start_run
from tests.support.serving import serving

TOKEN = "metrics-token-" + uuid.uuid4().hex
PRICED = "gpt-4o-mini"  # a model of the price table: counted under its own name

NAMES = [
    "papayya_runs_total",
    "papayya_run_duration_seconds",
    "papayya_steps_total",
    "papayya_llm_tokens_total",
    "papayya_llm_cost_usd_total",
    "papayya_budget_rejections_total",
    "papayya_queue_depth",
    "papayya_active_runs",
    "papayya_eventstore_append_seconds",
    "papayya_eventstore_visibility_lag_seconds",
    "papayya_projection_lag_seconds",
    "papayya_http_requests_total",
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: Samples = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def labels(self) -> set[str]:
        return {value for _, labels in self.samples for _, value in labels}


@pytest.fixture
async def api(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async with serving(dsn, monkeypatch, metrics_token=TOKEN) as running:
        yield running


async def scrape(api: Api, http: aiohttp.ClientSession) -> Scrape:
    headers = {"Authorization": f"Bearer {TOKEN}"}  # the metrics token, not an API key
    async with http.get(f"{api.url}/metrics", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return Scrape(await resp.text())


async def scrape_until(
    api: Api, http: aiohttp.ClientSession, done: Callable[[Scrape], bool], within: float = 10
) -> Scrape:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        current = await scrape(api, http)
        if done(current):
            return current
        assert asyncio.get_running_loop().time() < deadline, "metrics did not move"
        await asyncio.sleep(0.05)


async def test_every_metric_is_exposed(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> None:
    # The projector's lag gauge has a child once a projector has run.
    await project_everything(pg_store, dsn)
    current = await scrape(api, http)
    for name in NAMES:
        assert f"# TYPE {name} " in current.text, name


async def test_counters_follow_the_store(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    project = await default_project(api, http)
    slug = f"agent-{uuid.uuid4().hex[:8]}"
    body = {"name": slug, "slug": slug, "config": {}}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=api.headers()) as resp:
        assert resp.status == 201
        agent = (await resp.json())["id"]  # a defined agent: counted under its own id
    model = PRICED
    ok_id, broke_id = f"run-ok-{uuid.uuid4().hex}", f"run-broke-{uuid.uuid4().hex}"
    before = await scrape(api, http)

    state = await start_run(runs, ok_id, project, agent)
    state = await append(runs, state, checkpoint_step(0))
    state = await append(runs, state, llm_step(1, model=model, cost=2500))
    await append(runs, state, [ev.RunCompleted(output="ok")])
    state = await start_run(runs, broke_id, project, agent)
    await append(runs, state, [ev.BudgetExceeded(message="out of money", limit="usd")])
    async with http.get(f"{api.url}/v1/runs/{ok_id}x/events", headers=api.headers()) as resp:
        assert resp.status == 404
    async with http.get(f"{api.url}/no/such/{ok_id}") as resp:
        assert resp.status == 404

    after = await scrape_until(
        api,
        http,
        lambda s: s.value("papayya_runs_total", agent=agent, status="budget_exceeded") == 1,
    )
    assert after.value("papayya_runs_total", agent=agent, status="completed") == 1

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("papayya_steps_total", type="checkpoint") == 1
    assert delta("papayya_steps_total", type="response") == 1
    assert delta("papayya_run_duration_seconds_count") == 2
    assert delta("papayya_budget_rejections_total") == 1
    tokens = {
        kind: delta("papayya_llm_tokens_total", model=model, kind=kind)
        for kind in ("input", "cached_input", "cache_write", "output", "reasoning")
    }
    assert tokens == {
        "input": 100,
        "cached_input": 10,
        "cache_write": 0,
        "output": 20,
        "reasoning": 0,
    }
    assert after.value("papayya_llm_cost_usd_total", agent=agent, model=model) == pytest.approx(
        0.0025
    )
    # HTTP requests by route template, never by the path that holds a run id.
    assert (
        after.value("papayya_http_requests_total", route="/v1/runs/{id}/events", status="404") >= 1
    )
    assert after.value("papayya_http_requests_total", route="/v1/projects", status="200") >= 1
    assert after.value("papayya_http_requests_total", route="unmatched", status="404") >= 1
    assert ok_id not in after.text and broke_id not in after.text
    assert not any("run-" in label for label in after.labels())


async def test_gauges_come_from_the_runs_table(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> None:
    runs = Runs(pg_store)
    project = await default_project(api, http)
    for n in range(2):
        await runs.append(None, [ev.RunQueued(run_id=f"q{n}", project_id=project, agent_id="a")])
    await start_run(runs, "busy", project)
    state = await start_run(runs, "done", project)
    await append(runs, state, [ev.RunCompleted()])
    await project_everything(pg_store, dsn)
    current = await scrape(api, http)
    assert current.value("papayya_queue_depth") == 2
    assert current.value("papayya_active_runs") == 1
    assert current.value("papayya_projection_lag_seconds", projection="runs") == 0


async def test_runs_queued_before_startup_are_attributed(
    dsn: str,
    http: aiohttp.ClientSession,
    pg_store: PostgresEventStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run the counter never saw queued: its agent and start come from its summary."""
    runs = Runs(pg_store)
    queued = ev.RunQueued(run_id="early", project_id="proj_early", agent_id="a", trigger="sdk")
    state = await runs.append(await runs.append(None, [queued]), [ev.RunStarted(attempt=1)])
    async with serving(dsn, monkeypatch, metrics_token=TOKEN) as api:
        before = await scrape(api, http)
        done = before.value("papayya_runs_total", agent="durable", status="completed")
        await append(runs, state, [ev.RunCompleted()])
        after = await scrape_until(
            api,
            http,
            lambda s: (
                s.value("papayya_runs_total", agent="durable", status="completed") == done + 1
            ),
        )
    durations = "papayya_run_duration_seconds_count"
    assert after.value(durations) - before.value(durations) == 1
