"""Agents over HTTP: the row and its AgentDefined event, slugs, patches, isolation."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import asyncpg

from tests.support.api import Api, create_agent, new_project, page
from tests.support.db import db_fetch


async def agent_events(dsn: str, agent_id: str) -> list[asyncpg.Record]:
    return await db_fetch(
        dsn,
        "SELECT stream_version, event_type, data::text AS data FROM events"
        " WHERE stream_id = $1 ORDER BY stream_version",
        f"agent-{agent_id}",
    )


async def test_create_get_patch(api: Api, http: Any, dsn: str) -> None:
    h = api.headers()
    agent = await create_agent(api, http, "support-bot")
    assert agent["id"].startswith("agent_") and agent["version"] == 1
    assert agent["config"]["budget_usd"] == "0.50" and agent["config"]["loop_threshold"] == 5
    assert agent["config"]["tools"][0] == "search"
    for ref in (agent["id"], "support-bot"):
        async with http.get(f"{api.url}/v1/agents/{ref}", headers=h) as resp:
            assert resp.status == 200
            assert await resp.json() == agent
    [event] = await agent_events(dsn, agent["id"])
    assert event["event_type"] == "AgentDefined" and '"slug": "support-bot"' in event["data"]

    patch = {"name": "Support", "config": {"max_steps": 3, "budget_usd": 1.25, "model": None}}
    async with http.patch(f"{api.url}/v1/agents/support-bot", json=patch, headers=h) as resp:
        assert resp.status == 200, await resp.text()
        changed = await resp.json()
    assert changed["version"] == 2 and changed["name"] == "Support"
    assert changed["config"]["max_steps"] == 3 and changed["config"]["budget_usd"] == "1.25"
    assert changed["config"]["model"] is None  # null puts a field back to its default
    assert changed["config"]["instructions"] == "Be brief."  # fields not sent stay
    # Nothing changes: no new version.
    async with http.patch(f"{api.url}/v1/agents/{agent['id']}", json={}, headers=h) as resp:
        assert resp.status == 200 and (await resp.json())["version"] == 2
    events = await agent_events(dsn, agent["id"])
    assert [e["stream_version"] for e in events] == [1, 2]
    assert '"name": "Support"' in events[-1]["data"]

    # A minimal agent: every config field has a default.
    body = {"name": "Tiny", "slug": "tiny", "config": {}, "description": "d"}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=h) as resp:
        assert resp.status == 201
        tiny = await resp.json()
    assert tiny["config"]["max_steps"] is None and tiny["config"]["tools"] == []
    assert tiny["description"] == "d"


async def test_slug_unique_per_project(api: Api, http: Any, dsn: str) -> None:
    h = api.headers()
    first = await create_agent(api, http, "alpha")
    await create_agent(api, http, "beta")
    body = {"name": "again", "slug": "alpha", "config": {}}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=h) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"]["code"] == "conflict"
    # Renaming onto a taken slug fails, and the event of that redefinition is not kept.
    async with http.patch(f"{api.url}/v1/agents/beta", json={"slug": "alpha"}, headers=h) as resp:
        assert resp.status == 409
    rows = await db_fetch(dsn, "SELECT slug FROM agents ORDER BY slug")
    assert [r["slug"] for r in rows] == ["alpha", "beta"]
    streams = await db_fetch(
        dsn, "SELECT stream_id, version FROM streams WHERE category = 'agent' ORDER BY 1"
    )
    assert [r["version"] for r in streams] == [1, 1]
    assert len(await agent_events(dsn, first["id"])) == 1
    # Another project may use the same slug.
    _, other_key = await new_project(api, http)
    await create_agent(api, http, "alpha", key=other_key)


async def test_concurrent_patches_each_get_a_version(api: Api, http: Any, dsn: str) -> None:
    agent = await create_agent(api, http, "busy")

    async def rename(i: int) -> int:
        async with http.patch(
            f"{api.url}/v1/agents/busy", json={"name": f"name {i}"}, headers=api.headers()
        ) as resp:
            assert resp.status == 200, await resp.text()
            return int((await resp.json())["version"])

    versions = await asyncio.gather(*(rename(i) for i in range(10)))
    assert sorted(versions) == list(range(2, 12))
    events = await agent_events(dsn, agent["id"])
    assert [e["stream_version"] for e in events] == list(range(1, 12))
    [row] = await db_fetch(dsn, "SELECT name FROM agents WHERE agent_id = $1", agent["id"])
    # The row is the last event's definition: they were written together.
    assert f'"name": "{row["name"]}"' in events[-1]["data"]


async def test_key_required(api: Api, http: Any) -> None:
    agent = await create_agent(api, http, "locked")
    for method, path in [
        ("POST", "/v1/agents"),
        ("GET", "/v1/agents"),
        ("GET", f"/v1/agents/{agent['id']}"),
        ("PATCH", f"/v1/agents/{agent['id']}"),
    ]:
        async with http.request(method, api.url + path, json={"name": "x"}) as resp:
            assert resp.status == 401, (method, path)
            assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_other_projects_agents_are_not_found(api: Api, http: Any, dsn: str) -> None:
    other_project, other_key = await new_project(api, http)
    mine = await create_agent(api, http, "mine")
    theirs = await create_agent(api, http, "theirs", key=other_key)
    for key, agent in [(api.key, theirs), (other_key, mine)]:
        h = api.headers(key)
        for ref in (agent["id"], agent["slug"]):
            async with http.get(f"{api.url}/v1/agents/{ref}", headers=h) as resp:
                assert resp.status == 404
                assert (await resp.json())["error"]["code"] == "not_found"
            async with http.patch(
                f"{api.url}/v1/agents/{ref}", json={"name": "stolen"}, headers=h
            ) as resp:
                assert resp.status == 404
        async with http.get(f"{api.url}/v1/agents", headers=h) as resp:
            assert agent["id"] not in {a["id"] for a in (await resp.json())}
    # Naming another project in the body answers as if it did not exist.
    body = {"name": "x", "slug": "x", "project_id": other_project, "config": {}}
    async with http.post(f"{api.url}/v1/agents", json=body, headers=api.headers()) as resp:
        assert resp.status == 404
    rows = await db_fetch(dsn, "SELECT name FROM agents ORDER BY name")
    assert [r["name"] for r in rows] == ["Agent mine", "Agent theirs"]
    [own] = await db_fetch(dsn, "SELECT project_id FROM agents WHERE slug = 'mine'")
    body["project_id"] = own["project_id"]
    async with http.post(f"{api.url}/v1/agents", json=body, headers=api.headers()) as resp:
        assert resp.status == 201


async def test_bad_bodies_write_nothing(api: Api, http: Any, dsn: str) -> None:
    agent = await create_agent(api, http, "steady")
    h = {**api.headers(), "Content-Type": "application/json"}
    good = b'"name": "n", "slug": "s", "config": {}'
    create_cases = [
        (b"", 400),
        (b"{not json", 400),
        (b"[]", 400),
        (b"{" + good + b', "extra": 1}', 400),
        (b'{"slug": "s", "config": {}}', 400),  # name is required
        (b'{"name": "n", "slug": "s", "config": null}', 400),  # config may be left out, not null
        (b'{"name": "n", "slug": "Bad Slug", "config": {}}', 400),
        (b'{"name": "n", "slug": "has_underscore", "config": {}}', 400),
        (b'{"name": 5, "slug": "s", "config": {}}', 400),
        (b'{"name": "n", "slug": "s", "config": {"max_steps": 0}}', 400),
        (b'{"name": "n", "slug": "s", "config": {"max_steps": "3"}}', 400),
        (b'{"name": "n", "slug": "s", "config": {"budget_usd": -1}}', 400),
        (b'{"name": "n", "slug": "s", "config": {"budget_usd": "NaN"}}', 400),
        (b'{"name": "n", "slug": "s", "config": {"tools": [1]}}', 400),
        (b'{"name": "n", "slug": "s", "config": {"top_k": 1}}', 400),
        (b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413),
    ]
    for raw, status in create_cases:
        async with http.post(f"{api.url}/v1/agents", data=io.BytesIO(raw), headers=h) as resp:
            assert resp.status == status, raw[:60]
            body = await resp.json()
            assert body["error"]["code"] and body["error"]["message"]
    patch_cases = [
        (b"{oops", 400),
        (b'{"colour": "red"}', 400),
        (b'{"name": ""}', 400),
        (b'{"config": {"max_steps": -1}}', 400),
        (b'{"config": {"unknown": 1}}', 400),
        (b'{"config": {"budget_usd": "1e400"}}', 400),
    ]
    for raw, status in patch_cases:
        async with http.patch(
            f"{api.url}/v1/agents/{agent['id']}", data=io.BytesIO(raw), headers=h
        ) as resp:
            assert resp.status == status, raw[:60]
            assert (await resp.json())["error"]["code"]
    assert len(await db_fetch(dsn, "SELECT 1 FROM agents")) == 1
    assert len(await agent_events(dsn, agent["id"])) == 1
    assert len(await db_fetch(dsn, "SELECT 1 FROM events")) == 1


async def test_list_paginates_newest_first(api: Api, http: Any) -> None:
    created = [(await create_agent(api, http, f"agent-{i}"))["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        items, cursor = await page(api, http, "/v1/agents", **params)
        pages += 1
        seen += [a["id"] for a in items]
        if cursor is None:
            break
    assert pages == 3 and seen == created[::-1]
    for bad in ({"cursor": "nope"}, {"cursor": "WyJ4IiwieSJd"}, {"limit": "0"}):
        async with http.get(f"{api.url}/v1/agents", params=bad, headers=api.headers()) as r:
            assert r.status == 400, bad
