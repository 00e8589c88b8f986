"""Durable run ids are scoped to their project: project A's run ``x`` does not stop project B
from opening its own ``x``, and neither sees or touches the other's. Runs stored under a
bare id before ids were scoped keep answering to it in their own project."""

from __future__ import annotations

import aiohttp
import pytest

from papayya.domain import events as ev
from tests.support.api import Api
from tests.support.serving import call
from web import keys

pytestmark = pytest.mark.timeout(120)

RUNS = "/v1/durable/runs"


async def second_project(http: aiohttp.ClientSession, api: Api) -> str:
    status, body = await call(http, api, "POST", "/v1/projects", {"name": "b"})
    assert status == 201, body
    return str(body["api_key"]["key"])


async def test_two_projects_each_have_their_own_run_of_the_same_id(
    api: Api, http: aiohttp.ClientSession
) -> None:
    b_key = await second_project(http, api)
    docs = {}
    for who, key in (("a", api.key), ("b", b_key)):
        status, doc = await call(
            http, api, "POST", RUNS, {"run_id": "x", "agent": f"agent-{who}", "input": who}, key
        )
        assert status == 201, (who, doc)
        assert doc["run_id"] == "x" and doc["agent"] == f"agent-{who}", doc
        docs[who] = doc
        status, cp = await call(
            http, api, "POST", f"{RUNS}/x/checkpoints",
            {"label": "task", "result": f"{who}-result", "duration_ms": 1}, key,
        )  # fmt: skip
        assert status == 201 and cp["step_number"] == 0, cp
    assert docs["a"]["id"] != docs["b"]["id"]

    # B finishes its x; A's is untouched.
    status, doc = await call(http, api, "PATCH", f"{RUNS}/x", {"status": "failed"}, b_key)
    assert status == 200 and doc["status"] == "failed"
    for who, key in (("a", api.key), ("b", b_key)):
        status, doc = await call(http, api, "GET", f"{RUNS}/x", key=key)
        assert status == 200 and doc["input"] == who, doc
        assert [c["result"] for c in doc["checkpoints"]] == [f"{who}-result"], doc
        assert doc["status"] == ("running" if who == "a" else "failed"), doc
        # A retried open resumes the project's own run.
        status, doc = await call(
            http, api, "POST", RUNS, {"run_id": "x", "agent": f"agent-{who}"}, key
        )
        assert status == 200 and doc["id"] == docs[who]["id"], doc

    # Each project's stored id is its own and no one else's, in the rest of the API too.
    for mine, theirs, key in (("a", "b", api.key), ("b", "a", b_key)):
        status, _ = await call(http, api, "GET", f"/v1/runs/{docs[mine]['id']}", key=key)
        assert status == 200
        for path in (f"/v1/runs/{docs[theirs]['id']}", f"{RUNS}/{docs[theirs]['id']}"):
            status, body = await call(http, api, "GET", path, key=key)
            assert status == 404, (path, body)
        # A replay of x is a replay of the project's own x.
        replay = {"run_id": f"r-{mine}", "agent": f"agent-{mine}", "replay_of": "x", "from_step": 1}
        status, doc = await call(http, api, "POST", RUNS, replay, key)
        assert status == 201 and doc["replayed_from"] == "x", doc
        status, source = await call(http, api, "GET", f"{RUNS}/{doc['replayed_from']}", key=key)
        assert source["id"] == docs[mine]["id"]


async def test_a_run_stored_under_its_bare_id_still_answers_to_it_in_its_project(
    api: Api, http: aiohttp.ClientSession
) -> None:
    status, projects = await call(http, api, "GET", "/v1/projects")
    a_project = projects[0]["id"]
    # As a durable run was stored before ids were scoped: under the client's id.
    queued = ev.RunQueued(run_id="legacy", project_id=a_project, agent_id="agent-a", trigger="sdk")
    await api.app[keys.RUNS].append(None, [queued, ev.RunStarted(attempt=1)])
    status, cp = await call(
        http, api, "POST", f"{RUNS}/legacy/checkpoints",
        {"label": "old", "result": 1, "duration_ms": 1},
    )  # fmt: skip
    assert status == 201, cp
    status, doc = await call(http, api, "POST", RUNS, {"run_id": "legacy", "agent": "agent-a"})
    assert status == 200 and doc["id"] == "legacy" and doc["attempt"] == 2, doc
    assert [c["label"] for c in doc["checkpoints"]] == ["old"]

    # Another project may open the same id: a run of its own, nothing of A's.
    b_key = await second_project(http, api)
    status, doc = await call(
        http, api, "POST", RUNS, {"run_id": "legacy", "agent": "agent-a"}, b_key
    )
    assert status == 201 and doc["id"] != "legacy" and doc["checkpoints"] == [], doc
    status, body = await call(http, api, "GET", "/v1/runs/legacy", key=b_key)
    assert status == 404, body
