"""``/v1/usage/runs`` a page at a time: the pages, joined, are the costliest-first list, ties
in cost and time included, and a cursor that is not the API's is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import msgspec

from eventstore import PostgresEventStore
from papayya.domain import events as ev
from projections import Projections
from tests.support.api import Api
from tests.support.projections import append_run, simple_run

NOW = datetime.now(UTC).replace(microsecond=0)


async def get(api: Api, http: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with http.get(api.url + path, headers=api.headers()) as resp:
        return resp.status, await resp.json()


async def test_costliest_runs_page_by_page(
    api: Api, http: aiohttp.ClientSession, pg_store: PostgresEventStore, dsn: str
) -> None:
    _, projects = await get(api, http, "/v1/projects")
    project = projects[0]["id"]
    # Seven runs: three share a cost and a creation time, so only run_id orders them.
    costs = {"a": 50, "b": 50, "c": 50, "d": 70, "e": 10, "f": 70, "g": 5}
    for run_id, cost in costs.items():
        events = simple_run(run_id, calls=1, cost=cost)
        queued = msgspec.structs.replace(events[0], project_id=project, at=NOW)
        if run_id == "f":
            queued = msgspec.structs.replace(queued, at=NOW - timedelta(seconds=1))
        await append_run(pg_store, run_id, [queued, *events[1:]])
    await append_run(
        pg_store, "free", [ev.RunQueued(run_id="free", project_id=project, agent_id="x")]
    )
    await pg_store.wait_visible()
    await Projections(pg_store, dsn).catch_up()

    status, whole = await get(api, http, "/v1/usage/runs?limit=50")
    assert status == 200 and whole["next_cursor"] is None
    order = [r["id"] for r in whole["data"]]
    assert order == ["d", "f", "a", "b", "c", "e", "g"]

    pages, cursor = [], ""
    while True:
        status, page = await get(api, http, f"/v1/usage/runs?limit=2{cursor}")
        assert status == 200 and len(page["data"]) <= 2
        pages.extend(r["id"] for r in page["data"])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert pages == order

    for bad in ("nope", "WzEsMl0", "WyJ4IiwiMjAyNi0wMS0wMSIsImEiXQ"):  # [1,2], ["x",...]
        status, body = await get(api, http, f"/v1/usage/runs?cursor={bad}")
        assert status == 400 and body["error"]["code"] == "invalid_input", body
