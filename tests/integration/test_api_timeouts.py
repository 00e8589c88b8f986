"""A run's time limit over HTTP (issue 19): ``timeout_seconds`` on a run, an agent's config
and the project's default, resolved in that order when the run is queued and recorded in its
``RunQueued``; values out of range answer 400 and write nothing."""

from __future__ import annotations

import io
from typing import Any

from papayya.domain import events as ev
from tests.support.api import Api, create_agent, default_project
from tests.support.db import db_fetch
from web import keys


async def call(api: Api, http: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with http.request(method, api.url + path, json=body, headers=api.headers()) as resp:
        return resp.status, await resp.json()


async def queued_timeout(api: Api, run_id: str) -> int | None:
    [queued, *_] = await api.app[keys.RUNS].events(run_id)
    assert isinstance(queued, ev.RunQueued)
    return queued.timeout_seconds


async def test_the_run_then_the_agent_then_the_project_decide(api: Api, http: Any) -> None:
    project = await default_project(api, http)
    status, shown = await call(api, http, "GET", f"/v1/projects/{project}")
    assert status == 200 and shown["default_timeout_seconds"] == 3600
    plain = await create_agent(api, http, "plain")
    timed = await create_agent(api, http, "timed", timeout_seconds=120)
    assert timed["config"]["timeout_seconds"] == 120

    status, run = await call(api, http, "POST", "/v1/runs", {"agent_id": plain["id"]})
    assert status == 201 and run["timeout_seconds"] == 3600  # the built-in default
    assert await queued_timeout(api, run["id"]) == 3600
    status, run = await call(api, http, "POST", "/v1/agents/timed/runs", {})
    assert status == 201 and run["timeout_seconds"] == 120  # the agent's
    status, run = await call(api, http, "POST", "/v1/agents/timed/runs", {"timeout_seconds": 7})
    assert status == 201 and run["timeout_seconds"] == 7  # the run's own

    status, changed = await call(
        api, http, "PATCH", f"/v1/projects/{project}", {"default_timeout_seconds": 900}
    )
    assert status == 200 and changed["default_timeout_seconds"] == 900
    status, shown = await call(api, http, "GET", f"/v1/projects/{project}")
    assert shown["default_timeout_seconds"] == 900 and shown["name"] == changed["name"]
    status, run = await call(api, http, "POST", "/v1/agents/plain/runs", {})
    assert run["timeout_seconds"] == 900 and await queued_timeout(api, run["id"]) == 900
    status, run = await call(api, http, "POST", "/v1/agents/timed/runs", {})
    assert run["timeout_seconds"] == 120  # an agent's own limit beats the project's default
    status, got = await call(api, http, "GET", f"/v1/runs/{run['id']}")
    assert got["timeout_seconds"] == 120

    # The agent's limit can be changed and put back to the default.
    status, patched = await call(
        api, http, "PATCH", "/v1/agents/timed", {"config": {"timeout_seconds": None}}
    )
    assert status == 200 and patched["config"]["timeout_seconds"] is None
    status, run = await call(api, http, "POST", "/v1/agents/timed/runs", {})
    assert run["timeout_seconds"] == 900
    # null puts the project back on the built-in default; a rename leaves the default alone.
    status, changed = await call(api, http, "PATCH", f"/v1/projects/{project}", {"name": "main"})
    assert status == 200 and changed["default_timeout_seconds"] == 900
    status, changed = await call(
        api, http, "PATCH", f"/v1/projects/{project}", {"default_timeout_seconds": None}
    )
    assert status == 200 and changed["default_timeout_seconds"] == 3600


async def test_bad_time_limits_answer_400_and_write_nothing(api: Api, http: Any, dsn: str) -> None:
    project = await default_project(api, http)
    agent = await create_agent(api, http, "careful")
    h = {**api.headers(), "Content-Type": "application/json"}
    runs_before = await db_fetch(dsn, "SELECT count(*) AS n FROM streams WHERE category = 'run'")
    agent_version = agent["version"]
    for bad in (b"0", b"-1", b"604801", b"1.5", b'"60"', b"true"):
        for method, path, body in (
            ("POST", "/v1/runs",
             b'{"agent_id": "' + agent["id"].encode() + b'", "timeout_seconds": ' + bad + b"}"),
            ("POST", "/v1/agents/careful/runs", b'{"timeout_seconds": ' + bad + b"}"),
            ("PATCH", "/v1/agents/careful", b'{"config": {"timeout_seconds": ' + bad + b"}}"),
            ("POST", "/v1/agents",
             b'{"name": "x", "slug": "x", "config": {"timeout_seconds": ' + bad + b"}}"),
            ("PATCH", f"/v1/projects/{project}",
             b'{"name": "renamed", "default_timeout_seconds": ' + bad + b"}"),
        ):  # fmt: skip
            async with http.request(method, api.url + path, data=io.BytesIO(body), headers=h) as r:
                assert r.status == 400, (method, path, bad)
                error = (await r.json())["error"]
                assert error["code"] and "timeout_seconds" in error["message"], error
    assert await db_fetch(dsn, "SELECT count(*) AS n FROM streams WHERE category = 'run'") == (
        runs_before
    )
    status, shown = await call(api, http, "GET", f"/v1/projects/{project}")
    assert shown["name"] != "renamed" and shown["default_timeout_seconds"] == 3600
    status, still = await call(api, http, "GET", "/v1/agents/careful")
    assert still["version"] == agent_version and still["config"]["timeout_seconds"] is None
    status, listed = await call(api, http, "GET", "/v1/agents")
    assert [a["slug"] for a in listed] == ["careful"]
    # The bounds themselves are accepted.
    for good in (1, 604800):
        status, run = await call(api, http, "POST", "/v1/agents/careful/runs",
                                 {"timeout_seconds": good})  # fmt: skip
        assert status == 201 and run["timeout_seconds"] == good


async def test_openapi_shows_the_limits(api: Api, http: Any) -> None:
    async with http.get(f"{api.url}/openapi.json") as resp:
        spec = await resp.json()
    schemas = spec["components"]["schemas"]
    for name in ("RunOptions", "PatchProject", "AgentConfig"):
        fields = schemas[name]["properties"]
        limit = fields.get("timeout_seconds") or fields["default_timeout_seconds"]
        text = str(limit)
        assert "604800" in text and "'minimum': 1" in text, (name, limit)
    assert "timeout_seconds" in schemas["RunOut"]["properties"]
    assert "default_timeout_seconds" in schemas["ProjectOut"]["properties"]
