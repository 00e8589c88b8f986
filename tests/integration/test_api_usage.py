"""``GET /v1/usage`` and ``/v1/usage/breakdown`` over a real server and the projected tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from papayya.runs import Runs
from tests.support.api import Api, default_project, other_project
from tests.support.runs import append, llm_call, llm_step, old_run, project_everything, start_run


async def get(
    api: Api, http: aiohttp.ClientSession, path: str, key: str | None = None
) -> dict[str, Any]:
    async with http.get(f"{api.url}{path}", headers=api.headers(key)) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


@pytest.fixture
async def spent(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> dict[str, int]:
    """Runs with known model calls in the default project, another project, and in 2024."""
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    theirs, _ = await other_project(api, http, "team-b")
    state = await start_run(runs, "a", mine, agent="a1")
    state = await append(runs, state, llm_step(0, model="m1", cost=1234))
    # Two calls in one step, one of them for another model.
    state = await append(runs, state, [ev.StepStarted(step_number=1, step_type="tool_call")])
    state = await append(runs, state, [llm_call(1, "m1", 5001), llm_call(1, "m2", 7)])
    await append(runs, state, [ev.StepCompleted(step_number=1), ev.RunCompleted()])
    state = await start_run(runs, "b", mine, agent="a2")
    await append(runs, state, llm_step(0, model="m2", cost=333))
    await start_run(runs, "c", mine, agent="a3")  # a run without model calls
    state = await start_run(runs, "t", theirs, agent="a1")
    await append(runs, state, llm_step(0, model="m1", cost=99_999))
    await old_run(runs, "old", mine, cost=10_000)
    await project_everything(pg_store, dsn)
    # What the store recorded for the default project in the last 30 days, call by call.
    page = await pg_store.read_all(limit=10_000)
    recorded = [
        e.data["cost_micro_usd"]
        for e in page.events
        if e.event_type == "LlmCallRecorded" and e.stream_id in {"run-a", "run-b"}
    ]
    return {"cost": sum(recorded), "calls": len(recorded)}


async def test_totals_are_the_sum_of_recorded_calls(
    api: Api, http: aiohttp.ClientSession, spent: dict[str, int]
) -> None:
    usage = await get(api, http, "/v1/usage")
    today = datetime.now(UTC).date()
    assert usage["to"] == today.isoformat()
    assert usage["from"] == (today - timedelta(days=29)).isoformat()
    assert spent == {"cost": 1234 + 5001 + 7 + 333, "calls": 4}
    assert usage == {
        "from": usage["from"],
        "to": usage["to"],
        "runs": 3,
        "calls": 4,
        "input_tokens": 4 * 110,  # uncached 100 + cached 10 per call
        "output_tokens": 4 * 20,
        "cached_tokens": 4 * 10,
        "cost_usd": "0.006575",
        "total_cost_cents": 1,  # 0.6575 cents, rounded up
    }
    old = await get(api, http, "/v1/usage?from=2024-01-01&to=2024-01-31")
    assert (old["runs"], old["calls"], old["cost_usd"], old["total_cost_cents"]) == (
        1,
        1,
        "0.010000",
        1,
    )
    day = await get(api, http, "/v1/usage?from=2024-01-15&to=2024-01-15")
    assert day["runs"] == 1
    none = await get(api, http, "/v1/usage?from=2024-01-16&to=2024-02-01")
    assert (none["runs"], none["calls"], none["cost_usd"], none["total_cost_cents"]) == (
        0,
        0,
        "0.000000",
        0,
    )


async def test_breakdown_by_agent_and_model(
    api: Api, http: aiohttp.ClientSession, spent: dict[str, int]
) -> None:
    report = await get(api, http, "/v1/usage/breakdown")
    agents = {a["agent_id"]: a for a in report["by_agent"]}
    assert {k: (a["runs"], a["calls"], a["cost_usd"]) for k, a in agents.items()} == {
        "a1": (1, 3, "0.006242"),
        "a2": (1, 1, "0.000333"),
        "a3": (1, 0, "0.000000"),
    }
    models = {m["model"]: (m["calls"], m["cost_usd"]) for m in report["by_model"]}
    assert models == {"m1": (2, "0.006235"), "m2": (2, "0.000340")}
    pairs = {(p["agent_id"], p["model"]): p["cost_usd"] for p in report["by_agent_model"]}
    assert pairs == {("a1", "m1"): "0.006235", ("a1", "m2"): "0.000007", ("a2", "m2"): "0.000333"}
    assert sum(a["total_cost_cents"] for a in report["by_agent"]) >= 1


async def test_scoped_to_the_callers_project(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> None:
    runs = Runs(pg_store)
    theirs, their_key = await other_project(api, http, "team-c")
    state = await start_run(runs, "t", theirs, agent="x")
    await append(runs, state, llm_step(0, model="m9", cost=42))
    await project_everything(pg_store, dsn)
    mine = await get(api, http, "/v1/usage")
    assert (mine["runs"], mine["cost_usd"]) == (0, "0.000000")
    their = await get(api, http, "/v1/usage", their_key)
    assert (their["runs"], their["cost_usd"], their["total_cost_cents"]) == (1, "0.000042", 1)
    breakdown = await get(api, http, "/v1/usage/breakdown", their_key)
    assert [m["model"] for m in breakdown["by_model"]] == ["m9"]


async def test_bad_dates_and_auth(api: Api, http: aiohttp.ClientSession) -> None:
    for path in ["/v1/usage", "/v1/usage/breakdown"]:
        async with http.get(f"{api.url}{path}") as resp:
            assert resp.status == 401
        for query in [
            "?from=yesterday",
            "?to=2024-13-01",
            "?from=2024-02-01T00:00:00Z",
            "?from=2024-03-01&to=2024-02-01",
            "?to=9999-12-31",
        ]:
            async with http.get(f"{api.url}{path}{query}", headers=api.headers()) as resp:
                assert resp.status == 400, query
                assert (await resp.json())["error"]["code"] == "invalid_input"
    assert (await get(api, http, "/v1/usage?to=0001-01-05"))["from"] == "0001-01-01"
    # Only `to`: the 30 days ending then.
    usage = await get(api, http, "/v1/usage?to=2024-01-31")
    assert usage["from"] == (date(2024, 1, 31) - timedelta(days=29)).isoformat()
