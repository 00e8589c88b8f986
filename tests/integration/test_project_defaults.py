"""A project's run defaults: runs that state no budget or max_steps (nor their agent) get the
project's, 500 cents and 50 steps unless it says otherwise; "no limit" is only ever an
explicit project setting; an unpriced model in a budgeted run is refused before the provider
hears of it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import openai
import pytest

from eventstore.migrations import MIGRATIONS_DIR, migrate
from papayya.domain import events as ev
from tests.support.api import Api, call, default_project
from tests.support.db import db_fetch
from tests.support.gateway import Gateway, running_gateway

MODEL = "gpt-4o"
UNPRICED = "mystery-model"
ASK = [{"role": "user", "content": "hi"}]
SILENT_AGENT = {"model": "gpt-4o-mini", "instructions": "Be brief."}


@pytest.fixture
async def gw(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    async with running_gateway(dsn, monkeypatch) as gateway:
        yield gateway
        for client in gateway.clients:
            await client.close()


async def project_of(api: Api, http: aiohttp.ClientSession) -> dict[str, Any]:
    path = f"/v1/projects/{await default_project(api, http)}"
    status, project = await call(api, http, "GET", path)
    assert status == 200, project
    return dict(project)


async def patch_defaults(api: Api, http: aiohttp.ClientSession, **body: Any) -> tuple[int, Any]:
    return await call(api, http, "PATCH", f"/v1/projects/{await default_project(api, http)}", body)


async def open_durable(gw: Gateway, http: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    """A durable run opened as the SDK opens it: no budget, no max_steps."""
    body = {"run_id": run_id, "agent": "bot"}
    status, run = await call(gw.api, http, "POST", "/v1/durable/runs", body)
    assert status == 201, run
    return dict(run)


async def test_a_project_starts_at_the_hosted_defaults_and_only_a_setting_lifts_them(
    api: Api, http: aiohttp.ClientSession
) -> None:
    project = await project_of(api, http)
    assert (project["default_budget_cents"], project["default_max_steps"]) == (500, 50)
    status, created = await call(api, http, "POST", "/v1/projects", {"name": "team-d"})
    assert status == 201
    assert (created["default_budget_cents"], created["default_max_steps"]) == (500, 50)
    status, changed = await patch_defaults(api, http, default_max_steps=20)
    assert status == 200
    assert (changed["default_budget_cents"], changed["default_max_steps"]) == (500, 20)
    for bad in ({"default_max_steps": 0}, {"default_budget_cents": -1},
                {"default_budget_cents": "5"}, {"default_budget": None}):  # fmt: skip
        status, error = await patch_defaults(api, http, **bad)
        assert status == 400 and error["error"]["message"], bad
    assert (await project_of(api, http))["default_max_steps"] == 20  # nothing written
    status, unlimited = await patch_defaults(api, http, default_budget_cents=None)
    assert status == 200
    assert (unlimited["default_budget_cents"], unlimited["default_max_steps"]) == (None, 20)
    # The other project kept its own.
    status, other = await call(api, http, "GET", f"/v1/projects/{created['id']}",
                               key=created["api_key"]["key"])  # fmt: skip
    assert (other["default_budget_cents"], other["default_max_steps"]) == (500, 50)


async def test_projects_made_before_the_defaults_existed_get_them(
    empty_dsn: str, tmp_path: Path
) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if "project_defaults" not in path.name:
            shutil.copy(path, before / path.name)
    await migrate(empty_dsn, before)
    conn = await asyncpg.connect(empty_dsn)
    try:
        await conn.execute("INSERT INTO projects (project_id, name) VALUES ('proj_old', 'old')")
        applied = await migrate(empty_dsn)
        assert len(applied) == 1 and applied[0].endswith("_project_defaults"), applied
        row = await conn.fetchrow(
            "SELECT default_budget_cents, default_max_steps FROM projects WHERE name = 'old'"
        )
    finally:
        await conn.close()
    assert row is not None and tuple(row) == (500, 50)


async def test_a_run_takes_its_own_limits_else_its_agents_else_the_projects(
    api: Api, http: aiohttp.ClientSession
) -> None:
    from web import keys

    body = {"name": "Silent", "slug": "silent", "config": SILENT_AGENT}
    assert (await call(api, http, "POST", "/v1/agents", body))[0] == 201
    config = {**SILENT_AGENT, "max_steps": 7, "budget_usd": "0.50"}
    body = {"name": "Stating", "slug": "stating", "config": config}
    assert (await call(api, http, "POST", "/v1/agents", body))[0] == 201

    async def run(agent: str, **options: Any) -> dict[str, Any]:
        status, out = await call(api, http, "POST", "/v1/runs", {"agent_id": agent, **options})
        assert status == 201, out
        events = await api.app[keys.RUNS].events(out["id"])
        queued = events[0]
        assert isinstance(queued, ev.RunQueued)  # the event records what was resolved
        cents = None if queued.budget_micro_usd is None else queued.budget_micro_usd // 10_000
        assert (cents, queued.max_steps) == (out["budget_cents"], out["max_steps"])
        return out

    silent = await run("silent")
    assert (silent["budget_cents"], silent["max_steps"]) == (500, 50)
    stating = await run("stating")
    assert (stating["budget_cents"], stating["max_steps"]) == (50, 7)
    own = await run("stating", budget_cents=3, max_steps=2)
    assert (own["budget_cents"], own["max_steps"]) == (3, 2)
    changes = {"default_budget_cents": 120, "default_max_steps": 9}
    assert (await patch_defaults(api, http, **changes))[0] == 200
    changed = await run("silent")
    assert (changed["budget_cents"], changed["max_steps"]) == (120, 9)
    assert (await run("stating"))["max_steps"] == 7  # the agent's still wins
    unlimited = {"default_budget_cents": None, "default_max_steps": None}
    assert (await patch_defaults(api, http, **unlimited))[0] == 200
    free = await run("silent")
    assert (free["budget_cents"], free["max_steps"]) == (None, None)
    assert (await run("silent", max_steps=4))["max_steps"] == 4


async def test_schedule_and_webhook_runs_get_the_projects_defaults_at_their_fire(
    api: Api, http: aiohttp.ClientSession, dsn: str
) -> None:
    from datetime import datetime, timedelta

    from papayya.triggers.firing import start_scheduled_run
    from papayya.triggers.scheduler import Scheduler
    from web import keys

    body = {"name": "Silent", "slug": "silent", "config": SILENT_AGENT}
    assert (await call(api, http, "POST", "/v1/agents", body))[0] == 201
    path = "/v1/agents/silent/schedules"
    status, schedule = await call(api, http, "POST", path, {"cron_expression": "* * * * *"})
    assert status == 201, schedule
    status, hook = await call(api, http, "POST", "/v1/agents/silent/webhooks", {"name": "h"})
    assert status == 201, hook
    # Set after the triggers were made: a fire reads the project's defaults when it fires.
    changes = {"default_budget_cents": 300, "default_max_steps": 30}
    assert (await patch_defaults(api, http, **changes))[0] == 200

    store = api.app[keys.STORE]
    [row] = await db_fetch(
        dsn, "SELECT next_fire_at FROM schedules WHERE schedule_id = $1", schedule["id"]
    )
    when: datetime = row["next_fire_at"] + timedelta(seconds=1)
    [fire] = await Scheduler(store, start_scheduled_run(store), clock=lambda: when).tick()
    status, fired = await call(api, http, "GET", f"/v1/runs/{fire.run_id}")
    assert status == 200 and (fired["budget_cents"], fired["max_steps"]) == (300, 30)

    from tests.support.webhooks import signed

    payload = b'{"ref": "main"}'
    headers = {**signed(hook["secret"], payload), "Content-Type": "application/json"}
    async with http.post(hook["trigger_url"], data=payload, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
        run_id = (await resp.json())["run_id"]
    status, triggered = await call(api, http, "GET", f"/v1/runs/{run_id}")
    assert status == 200 and (triggered["budget_cents"], triggered["max_steps"]) == (300, 30)


async def test_a_durable_run_gets_the_budget_default_and_a_stated_max_steps_holds(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    await open_durable(gw, http, "defaulted")
    run = await gw.runs.load(f"{await gw.project_id()}:defaulted")
    # The project's budget, not its step default: a durable run's steps are the caller's loop.
    assert run.budget.micro_usd == 500 * 10_000 and run.max_steps is None
    body = {"run_id": "stated", "agent": "bot", "max_steps": 50}
    status, opened = await call(gw.api, http, "POST", "/v1/durable/runs", body)
    assert status == 201, opened
    client = gw.openai(opened["run_token"])
    for _ in range(50):
        await client.chat.completions.create(model=MODEL, messages=ASK)
    with pytest.raises(openai.BadRequestError, match="max_steps=50"):
        await client.chat.completions.create(model=MODEL, messages=ASK)
    assert gw.fake.stats.total == 50  # the 51st never reached the provider
    run = await gw.runs.load(f"{await gw.project_id()}:stated")
    assert run.status == "failed" and run.error_code == "max_steps_exceeded"
    assert run.max_steps == 50 and len(run.steps) == 50


async def test_a_durable_run_checkpoints_past_50_unless_the_open_states_a_limit(
    api: Api, http: aiohttp.ClientSession
) -> None:
    async def checkpoints(run_id: str, count: int) -> tuple[int, Any]:
        for n in range(count):
            body = {"label": f"item-{n}", "duration_ms": 1, "result": n}
            status, answer = await call(
                api, http, "POST", f"/v1/durable/runs/{run_id}/checkpoints", body
            )
            if status != 201:
                return n, answer
        return count, None

    # Published-SDK code: a loop of tasks, no limit stated; the project's 50 does not cut it.
    loop = {"run_id": "loop", "agent": "bot"}
    assert (await call(api, http, "POST", "/v1/durable/runs", loop))[0] == 201
    assert await checkpoints("loop", 51) == (51, None)
    stated = {"run_id": "stated", "agent": "bot", "max_steps": 50}
    assert (await call(api, http, "POST", "/v1/durable/runs", stated))[0] == 201
    done, error = await checkpoints("stated", 51)
    assert done == 50 and error["error"]["code"] == "max_steps_exceeded", error


async def test_an_unpriced_model_is_refused_in_a_defaulted_run_until_it_is_priced(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    project = await gw.project_id()
    opened = await open_durable(gw, http, "unpriced")
    client = gw.openai(opened["run_token"])
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=UNPRICED, messages=ASK)
    error = refused.value.response.json()["error"]
    assert refused.value.status_code == 400 and error["code"] == "model_not_priced"
    assert UNPRICED in error["message"]
    assert f"PUT /v1/projects/{project}/rate-card" in error["message"]
    assert f"papayya rate-card set {UNPRICED}" in error["message"]
    assert gw.fake.stats.total == 0 and list(gw.fake.stats.requests) == []
    run = await gw.runs.load(f"{project}:unpriced")
    assert run.status == "running" and run.steps == ()  # refused, not ended: it may price it

    card = {UNPRICED: {"input_per_million_usd": "1", "output_per_million_usd": "2"}}
    status, _ = await call(gw.api, http, "PUT", f"/v1/projects/{project}/rate-card", card)
    assert status == 200
    await client.chat.completions.create(model=UNPRICED, messages=ASK)
    assert gw.fake.stats.by_model[UNPRICED] == 1
    run = await gw.runs.load(f"{project}:unpriced")
    assert run.steps[0].usage.cost_micro_usd > 0  # counted at the card's price


async def test_an_explicitly_unlimited_project_may_call_an_unpriced_model_at_no_cost(
    gw: Gateway, http: aiohttp.ClientSession
) -> None:
    status, _ = await patch_defaults(gw.api, http, default_budget_cents=None)
    assert status == 200
    opened = await open_durable(gw, http, "free")
    await gw.openai(opened["run_token"]).chat.completions.create(model=UNPRICED, messages=ASK)
    assert gw.fake.stats.by_model[UNPRICED] == 1
    run = await gw.runs.load(f"{await gw.project_id()}:free")
    assert run.budget.micro_usd is None and run.max_steps is None  # durable: no step default
    assert run.steps[0].usage.cost_micro_usd == 0
