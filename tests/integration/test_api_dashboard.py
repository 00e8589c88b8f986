"""The JSON endpoints the dashboard added (overview, spend by day, costliest runs, a step in
full, a run's timeline, the login link exchange) and the dashboard's own pages and assets."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventstore import PostgresEventStore
from papayya.database import server_secret
from papayya.domain import events as ev
from papayya.runs import Runs
from tests.support.api import Api, default_project, other_project
from tests.support.db import db_fetch
from tests.support.runs import (
    append,
    checkpoint_step,
    llm_step,
    old_run,
    project_everything,
    start_run,
)
from web import keys
from web.routes import dashboard, login

DASHBOARD = Path(dashboard.__file__).parents[1] / "dashboard"


async def call(
    api: Api, http: aiohttp.ClientSession, method: str, path: str, key: str | None = "",
    **kwargs: Any,
) -> tuple[int, Any]:  # fmt: skip
    """``key``: "" for the default project's, None for none at all."""
    headers = {} if key is None else api.headers(key or None)
    async with http.request(method, api.url + path, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def assert_bad(api: Api, http: aiohttp.ClientSession, path: str, code: int = 400) -> None:
    status, body = await call(api, http, "GET", path)
    assert status == code, (path, body)
    assert body["error"]["code"] == "invalid_input", body


# -- overview -------------------------------------------------------------------------------


async def test_overview(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> None:
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    theirs, their_key = await other_project(api, http, "team-b")
    state = await start_run(runs, "done", mine)
    await append(runs, state, [*llm_step(0, cost=2500), ev.RunCompleted()])
    state = await start_run(runs, "broke", mine)
    await append(runs, state, [ev.RunFailed(code="boom")])
    await start_run(runs, "busy", mine)
    await runs.append(None, [ev.RunQueued(run_id="waiting", project_id=mine, agent_id="a")])
    state = await start_run(runs, "their-fail", theirs)
    await append(runs, state, [ev.RunFailed(code="boom")])
    await project_everything(pg_store, dsn)

    status, body = await call(api, http, "GET", "/v1/overview")
    assert status == 200, body
    assert body["window_minutes"] == 60 and len(body["per_minute"]) == 60
    assert body["runs_created"] == 4 and body["runs_per_minute"] == round(4 / 60, 3)
    assert body["runs_ended"] == 2 and body["ended_by_status"] == {"completed": 1, "failed": 1}
    assert body["failure_rate"] == 0.5
    assert body["p95_duration_ms"] is not None and body["p95_duration_ms"] >= 0
    assert (body["active_runs"], body["queue_depth"]) == (1, 1)
    assert body["spend_today_usd"] == "0.002500" == body["spend_last_7_days_usd"]
    minutes = body["per_minute"]
    assert sum(m["created"] for m in minutes) == 4
    assert sum(m["completed"] + m["failed"] + m["other"] for m in minutes) == 2
    assert [m["minute"] for m in minutes] == sorted(m["minute"] for m in minutes)

    status, small = await call(api, http, "GET", "/v1/overview?window=5")
    assert status == 200 and len(small["per_minute"]) == 5
    status, other = await call(api, http, "GET", "/v1/overview", key=their_key)
    assert status == 200
    assert (other["runs_created"], other["failure_rate"], other["active_runs"]) == (1, 1.0, 0)
    assert other["spend_today_usd"] == "0.000000"

    status, body = await call(api, http, "GET", "/v1/overview", key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    for bad in ("0", "1441", "x", "-5"):
        await assert_bad(api, http, f"/v1/overview?window={bad}")


async def test_overview_of_a_project_without_runs(api: Api, http: aiohttp.ClientSession) -> None:
    status, body = await call(api, http, "GET", "/v1/overview?window=15")
    assert status == 200
    assert body["runs_created"] == 0 and body["failure_rate"] is None
    assert body["p50_duration_ms"] is None and body["p95_duration_ms"] is None
    assert all(
        m == {**m, "created": 0, "completed": 0, "failed": 0, "other": 0}
        for m in body["per_minute"]
    )


# -- spend by day and the costliest runs -----------------------------------------------------


@pytest.fixture
async def spent(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> str:
    """Runs of known cost in the default project (one of them in January 2024), and a costly
    one in another project. Returns the other project's key."""
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    theirs, their_key = await other_project(api, http, "team-b")
    for run_id, cost in (("cheap", 100), ("dear", 9000), ("middle", 4000)):
        state = await start_run(runs, run_id, mine)
        await append(runs, state, [*llm_step(0, cost=cost), ev.RunCompleted()])
    await start_run(runs, "free", mine)  # no model call: not among the costliest
    state = await start_run(runs, "theirs", theirs)
    await append(runs, state, llm_step(0, cost=999_999))
    await old_run(runs, "old", mine, cost=10_000)
    await project_everything(pg_store, dsn)
    return their_key


async def test_usage_daily(api: Api, http: aiohttp.ClientSession, spent: str) -> None:
    status, body = await call(api, http, "GET", "/v1/usage/daily")
    assert status == 200, body
    today = datetime.now(UTC).date()
    assert body["to"] == today.isoformat() and len(body["days"]) == 30
    assert [d["day"] for d in body["days"]][-1] == today.isoformat()
    last = body["days"][-1]
    assert (last["calls"], last["cost_usd"], last["total_cost_cents"]) == (3, "0.013100", 2)
    assert all(d["calls"] == 0 and d["cost_usd"] == "0.000000" for d in body["days"][:-1])

    status, old = await call(api, http, "GET", "/v1/usage/daily?from=2024-01-14&to=2024-01-16")
    assert status == 200
    assert [(d["day"], d["cost_usd"]) for d in old["days"]] == [
        ("2024-01-14", "0.000000"),
        ("2024-01-15", "0.010000"),
        ("2024-01-16", "0.000000"),
    ]
    status, theirs = await call(api, http, "GET", "/v1/usage/daily", key=spent)
    assert theirs["days"][-1]["cost_usd"] == "0.999999"

    status, body = await call(api, http, "GET", "/v1/usage/daily", key=None)
    assert status == 401
    for bad in ("from=2024-02-01&to=2024-01-01", "from=2023-01-01&to=2024-12-31", "from=nope"):
        await assert_bad(api, http, f"/v1/usage/daily?{bad}")


async def test_costliest_runs(api: Api, http: aiohttp.ClientSession, spent: str) -> None:
    status, body = await call(api, http, "GET", "/v1/usage/runs")
    assert status == 200, body
    assert [(r["id"], r["cost_usd"]) for r in body["data"]] == [
        ("dear", "0.009000"),
        ("middle", "0.004000"),
        ("cheap", "0.000100"),
    ]
    first = body["data"][0]
    assert first["status"] == "completed" and first["total_cost_cents"] == 1
    status, top = await call(api, http, "GET", "/v1/usage/runs?limit=1")
    assert [r["id"] for r in top["data"]] == ["dear"]
    status, old = await call(api, http, "GET", "/v1/usage/runs?from=2024-01-01&to=2024-01-31")
    assert [r["id"] for r in old["data"]] == ["old"]
    status, theirs = await call(api, http, "GET", "/v1/usage/runs", key=spent)
    assert [r["id"] for r in theirs["data"]] == ["theirs"]

    status, _ = await call(api, http, "GET", "/v1/usage/runs", key=None)
    assert status == 401
    for bad in ("limit=0", "limit=201", "limit=x", "to=2024-13-01"):
        await assert_bad(api, http, f"/v1/usage/runs?{bad}")


# -- a step in full and the run's timeline ---------------------------------------------------


async def test_step_detail_resolves_payloads(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    request_ref = await pg_store.put_payload(b'{"messages": [{"role": "user", "content": "hi"}]}')
    response_ref = await pg_store.put_payload(b"data: " + b"x" * (300 * 1024), "text/event-stream")
    output_ref = await pg_store.put_payload(b'{"rows": [1, 2, 3]}')
    state = await start_run(runs, "full", mine)
    state = await append(runs, state, checkpoint_step(0, {"found": 3}))
    state = await append(runs, state, [
        ev.StepStarted(step_number=1, step_type="tool_call"),
        ev.BudgetReserved(reservation_id="res1", amount_micro_usd=50, step_number=1),
        ev.LlmCallRecorded(
            step_number=1, provider="openai", model="gpt-4o", fingerprint="fp", input_tokens=7,
            output_tokens=3, cost_micro_usd=42, request_ref=request_ref, response_ref=response_ref,
            tool_calls=({"name": "lookup", "arguments": '{"q": 1}'},), duration_ms=12.5,
        ),
        ev.BudgetSettled(reservation_id="res1", actual_micro_usd=42),
        ev.ToolCallRecorded(
            step_number=1, tool="lookup", fingerprint="t", input={"q": 1}, output_ref=output_ref
        ),
        ev.StepCompleted(step_number=1, duration_ms=20),
    ])  # fmt: skip

    status, body = await call(api, http, "GET", "/v1/runs/full/steps/1")
    assert status == 200, body
    assert body["step"]["step_type"] == "tool_call" and body["step"]["cost_usd"] == "0.000042"
    (llm,) = body["llm_calls"]
    assert llm["model"] == "gpt-4o" and llm["cost_usd"] == "0.000042" and not llm["replayed"]
    assert llm["request"]["content"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert llm["request"]["truncated"] is False and llm["request"]["ref"] == request_ref
    response = llm["response"]
    assert response["truncated"] is True and response["size"] == 6 + 300 * 1024
    assert isinstance(response["content"], str) and len(response["content"]) == 256 * 1024
    (tool,) = body["tool_calls"]
    assert tool["input"] == {"q": 1} and tool["output"] == {"rows": [1, 2, 3]}
    assert body["checkpoint"] is None
    assert [e["type"] for e in body["events"]] == [
        "StepStarted", "BudgetReserved", "LlmCallRecorded", "BudgetSettled",
        "ToolCallRecorded", "StepCompleted",
    ]  # fmt: skip

    status, body = await call(api, http, "GET", "/v1/runs/full/steps/0")
    assert status == 200
    assert body["checkpoint"]["label"] == "task-0" and body["checkpoint"]["result"] == {"found": 3}
    assert body["llm_calls"] == [] and body["tool_calls"] == []


async def test_step_detail_and_timeline_are_project_scoped(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    theirs, their_key = await other_project(api, http, "team-b")
    state = await start_run(runs, "theirs", theirs)
    await append(runs, state, checkpoint_step(0))
    for path in ("/v1/runs/theirs/steps/0", "/v1/runs/theirs/timeline"):
        status, body = await call(api, http, "GET", path)
        assert status == 404 and body["error"]["code"] == "run_not_found", body
        status, _ = await call(api, http, "GET", path, key=their_key)
        assert status == 200
        status, body = await call(api, http, "GET", path, key=None)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    for path in ("/v1/runs/missing/steps/0", "/v1/runs/missing/timeline"):
        status, body = await call(api, http, "GET", path)
        assert status == 404 and body["error"]["code"] == "run_not_found"
    for step in ("1", "99", "x", "-1", "1.0", "²", "9" * 5000):
        status, body = await call(api, http, "GET", f"/v1/runs/theirs/steps/{step}", key=their_key)
        assert status == 404 and body["error"]["code"] == "not_found", (step, body)


async def test_timeline_markers(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore
) -> None:
    runs = Runs(pg_store)
    mine = await default_project(api, http)
    state = await start_run(runs, "bumpy", mine)
    state = await append(runs, state, checkpoint_step(0))
    state = await append(runs, state, [ev.StepStarted(step_number=1, step_type="checkpoint")])
    state = await append(runs, state, [ev.AttemptLost(attempt=1), ev.RunStarted(attempt=2)])
    state = await append(runs, state, [
        *checkpoint_step(2),
        ev.DivergenceDetected(step_number=3, expected_fingerprint="a", actual_fingerprint="b"),
        *checkpoint_step(3),
        ev.CancelRequested(reason="enough"),
        ev.RunCancelled(reason="enough"),
    ])  # fmt: skip
    status, body = await call(api, http, "GET", "/v1/runs/bumpy/timeline")
    assert status == 200, body
    seen = [(m["kind"], m["step"], m["attempt"]) for m in body["data"]]
    assert seen == [
        ("queued", 0, None),
        ("started", 0, 1),
        ("recovery", 2, 1),
        ("started", 2, 2),
        ("divergence", 3, 2),
        ("cancel", 4, 2),
        ("ended", 4, 2),
    ]
    assert "enough" in body["data"][-1]["detail"] and body["data"][2]["type"] == "AttemptLost"
    assert all(m["at"] for m in body["data"])


# -- the login link -------------------------------------------------------------------------


async def counts(dsn: str) -> tuple[int, int]:
    [row] = await db_fetch(
        dsn,
        "SELECT (SELECT count(*) FROM api_keys) AS keys,"
        " (SELECT count(*) FROM streams WHERE category = 'login') AS used",
    )
    return row["keys"], row["used"]


async def test_a_login_link_signs_in_once(api: Api, http: aiohttp.ClientSession, dsn: str) -> None:
    pool = api.app[keys.STORE].pool
    link = await login.login_link(pool, "http://example.test/")
    assert link is not None and link.startswith("http://example.test/login#token=v1.")
    token = link.split("#token=", 1)[1]
    before = await counts(dsn)

    # Bad input is refused before anything is written.
    for body in ({}, {"token": ""}, {"token": token, "extra": 1}, {"token": 5}):
        status, answer = await call(api, http, "POST", "/v1/dashboard/login", key=None, json=body)
        assert status == 400 and answer["error"]["code"] == "invalid_input", (body, answer)
    status, _ = await call(api, http, "POST", "/v1/dashboard/login", key=None, data=b"{no")
    assert status == 400
    secret = await server_secret(pool, login.SECRET_NAME)
    project = (await db_fetch(dsn, "SELECT project_id FROM projects"))[0]["project_id"]
    for bad in (
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # tampered
        login.make_token(b"another secret", project, time.time()),  # signed by someone else
        login.make_token(secret, project, time.time() - 2 * login.TTL_SECONDS),  # expired
        login.make_token(secret, "proj_gone", time.time()),  # no such project
        "v2." + token[3:],
        "nonsense",
        "v1.ü.ß",  # not ASCII
        "v1.!!!." + token.rsplit(".", 1)[1],
    ):
        status, answer = await call(
            api, http, "POST", "/v1/dashboard/login", key=None, json={"token": bad}
        )
        assert status == 400 and answer["error"]["message"] == login.INVALID, (bad, answer)
    assert await counts(dsn) == before

    status, made = await call(
        api, http, "POST", "/v1/dashboard/login", key=None, json={"token": token}
    )
    assert status == 201, made
    assert made["api_key"].startswith("cpk_") and made["project_name"] == "default"
    status, projects = await call(api, http, "GET", "/v1/projects", key=made["api_key"])
    assert status == 200 and projects[0]["id"] == made["project_id"] == project
    assert await counts(dsn) == (before[0] + 1, before[1] + 1)

    status, again = await call(
        api, http, "POST", "/v1/dashboard/login", key=None, json={"token": token}
    )
    assert status == 400 and again["error"]["message"] == login.INVALID
    assert await counts(dsn) == (before[0] + 1, before[1] + 1)


async def test_no_login_link_before_any_project(empty_dsn: str) -> None:
    import asyncpg

    from eventstore.migrations import migrate

    await migrate(empty_dsn)
    conn = await asyncpg.connect(empty_dsn)
    try:
        assert await login.login_link(conn, "http://x") is None
    finally:
        await conn.close()


# -- the pages and their assets -------------------------------------------------------------


async def test_pages_and_assets(api: Api, http: aiohttp.ClientSession) -> None:
    for path in ("/", "/runs", "/runs/run_abc", "/cost", "/agents/weather", "/login"):
        async with http.get(api.url + path) as resp:
            assert resp.status == 200, path
            assert resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe" not in csp and "frame-ancestors 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert resp.headers["X-Request-Id"]
            html = await resp.text()
            assert '<script type="module" src="/assets/app.js"></script>' in html
    for path, kind in (
        ("/assets/app.js", "text/javascript"),
        ("/assets/lib/dom.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ):
        async with http.get(api.url + path) as resp:
            assert resp.status == 200 and resp.content_type == kind, path
            etag = resp.headers["ETag"]
        async with http.get(api.url + path, headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
    for path in (
        "/assets/nope.js",
        "/assets/index.html",
        "/assets/../app.py",
        "/assets/%2e%2e/routes/dashboard.py",
        "/assets/lib/../../app.py",
        "/nope",
    ):
        async with http.get(api.url + path) as resp:
            assert resp.status == 404, path
            assert (await resp.json())["error"]["code"] in ("not_found", "not found")


async def test_pages_stay_out_of_the_api_description(api: Api, http: aiohttp.ClientSession) -> None:
    status, spec = await call(api, http, "GET", "/openapi.json", key=None)
    assert status == 200
    paths = spec["paths"]
    assert not any(
        p == "/" or p.startswith(("/assets", "/runs", "/cost", "/agents")) for p in paths
    )
    for path in ("/v1/overview", "/v1/usage/daily", "/v1/usage/runs", "/v1/runs/{id}/steps/{n}",
                 "/v1/runs/{id}/timeline", "/v1/dashboard/login"):  # fmt: skip
        assert path in paths, path
    assert "security" not in paths["/v1/dashboard/login"]["post"]


def test_the_dashboard_never_parses_data_as_html() -> None:
    """No HTML sink in any script, no inline script or style in the page: data only ever
    becomes text nodes, and the CSP would refuse anything inline anyway."""
    scripts = sorted(DASHBOARD.rglob("*.js"))
    assert len(scripts) > 5
    for script in scripts:
        text = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "setAttribute(\"style\"", "javascript:"):  # fmt: skip
            assert sink not in text, (script.name, sink)
    html = (DASHBOARD / "index.html").read_text()
    assert "style=" not in html and "<style" not in html and not re.search(r"\son\w+=", html)
    assert html.count("<script") == 1 and 'src="/assets/app.js"' in html
