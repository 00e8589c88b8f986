"""The durable checkpoints API (``/v1/durable/runs``) against a live server and real Postgres."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from papayya.domain import events as ev
from tests.support.api import Api
from web import keys

RUNS = "/v1/durable/runs"


async def call(
    http: Any,
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    sent = {**api.headers(key), **(headers or {})}
    if data is not None:
        sent["Content-Type"] = "application/json"
    async with http.request(
        method,
        api.url + path,
        json=body if data is None else None,
        data=None if data is None else io.BytesIO(data),
        headers=sent,
    ) as resp:
        return resp.status, await resp.json()


async def written(api: Api) -> tuple[int, int]:
    """How many events and payloads the database holds."""
    pool = api.app[keys.STORE].pool
    return (
        await pool.fetchval("SELECT count(*) FROM events"),
        await pool.fetchval("SELECT count(*) FROM payloads"),
    )


async def other_key(http: Any, api: Api) -> str:
    status, body = await call(http, api, "POST", "/v1/projects", {"name": "other"})
    assert status == 201
    return str(body["api_key"]["key"])


async def test_open_checkpoint_read_and_finish(api: Api, http: Any) -> None:
    status, doc = await call(
        http, api, "POST", RUNS,
        {"run_id": "d1", "agent": "agent-a", "item_id": "item-7", "agent_version": "v3"},
    )  # fmt: skip
    assert status == 201
    assert doc["run_id"] == "d1" and doc["agent"] == "agent-a" and doc["status"] == "running"
    assert doc["id"] == f"{doc['project_id']}:d1"  # stored scoped to its project
    assert doc["item_id"] == "item-7" and doc["agent_version"] == "v3"
    assert doc["attempt"] == 1 and doc["trigger"] == "sdk" and doc["checkpoints"] == []
    assert doc["created_at"] and doc["updated_at"]

    big = {"text": "y" * 10_000}
    status, cp = await call(
        http, api, "POST", f"{RUNS}/d1/checkpoints",
        {"label": "search", "result": {"hits": 3}, "duration_ms": 12.5,
         "completed_at": "2026-01-02T03:04:05Z", "item_id": "item-7",
         "input_snapshot": {"q": "x"}, "output_snapshot": big, "agent_version": "v3"},
    )  # fmt: skip
    assert status == 201
    assert cp["step_number"] == 0 and cp["label"] == "search" and cp["result"] == {"hits": 3}
    assert cp["completed_at"] == "2026-01-02T03:04:05Z" and cp["duration_ms"] == 12.5
    assert cp["input_snapshot"] == {"q": "x"} and cp["output_snapshot"] == big
    status, cp2 = await call(
        http, api, "POST", f"{RUNS}/d1/checkpoints",
        {"label": "fetch", "result": big, "duration_ms": 1},
    )  # fmt: skip
    assert status == 201 and cp2["step_number"] == 1 and cp2["result"] == big
    assert cp2["result_ref"].startswith("sha256:")  # bulky: kept in the payloads table

    status, doc = await call(http, api, "GET", f"{RUNS}/d1")
    assert status == 200
    first, second = doc["checkpoints"]
    assert {k: first[k] for k in ("label", "result", "item_id", "agent_version")} == {
        "label": "search",
        "result": {"hits": 3},
        "item_id": "item-7",
        "agent_version": "v3",
    }
    assert first["output_snapshot"] == big and first["input_snapshot"] == {"q": "x"}
    assert second["result"] == big and second["item_id"] is None
    assert [s["status"] for s in doc["steps"]] == ["completed", "completed"]

    finish = {"status": "completed", "output": {"answer": 42}}
    status, doc = await call(http, api, "PATCH", f"{RUNS}/d1", finish)
    assert status == 200 and doc["status"] == "completed" and doc["output"] == {"answer": 42}
    assert doc["completed_at"]
    # The run as the rest of the API sees it: the same stream.
    state = await api.app[keys.RUNS].load(doc["id"])
    assert state.status == "completed" and [s.label for s in state.steps] == ["search", "fetch"]
    assert state.steps[0].fingerprint == doc["steps"][0]["fingerprint"]


async def test_opening_again_resumes_and_a_retried_open_does_not(api: Api, http: Any) -> None:
    body = {"run_id": "d2", "agent": "agent-a"}
    first = {"Idempotency-Key": "open-1"}
    status, doc = await call(http, api, "POST", RUNS, body, headers=first)
    assert (status, doc["attempt"]) == (201, 1)
    before = await written(api)
    status, doc = await call(http, api, "POST", RUNS, body, headers=first)  # a retry
    assert (status, doc["attempt"]) == (201, 1)
    assert await written(api) == before
    second = {"Idempotency-Key": "open-2"}
    status, doc = await call(http, api, "POST", RUNS, body, headers=second)  # a resume
    assert (status, doc["attempt"]) == (200, 2)
    status, doc = await call(http, api, "POST", RUNS, body, headers=second)
    assert (status, doc["attempt"]) == (200, 2)
    status, doc = await call(http, api, "POST", RUNS, body)  # no key: every open is a resume
    assert (status, doc["attempt"]) == (200, 3)
    await call(http, api, "PATCH", f"{RUNS}/d2", {"status": "failed", "error": "boom"})
    status, doc = await call(http, api, "POST", RUNS, body)  # an ended run starts no attempt
    assert (status, doc["attempt"], doc["status"]) == (200, 3, "failed")
    assert doc["error_code"] == "agent_error" and doc["error_message"] == "boom"
    status, _ = await call(http, api, "POST", RUNS, body, headers={"Idempotency-Key": "k" * 201})
    assert status == 400


async def test_checkpoints_and_endings_are_idempotent(api: Api, http: Any) -> None:
    await call(http, api, "POST", RUNS, {"run_id": "d3", "agent": "agent-a"})
    post = {"label": "a", "result": [1, 2], "duration_ms": 3}
    status, cp = await call(http, api, "POST", f"{RUNS}/d3/checkpoints", post)
    assert status == 201
    before = await written(api)
    status, again = await call(http, api, "POST", f"{RUNS}/d3/checkpoints", post)
    assert status == 200 and again == cp
    # The same label answered from the recording, whatever the retry carries.
    status, again = await call(
        http, api, "POST", f"{RUNS}/d3/checkpoints", {**post, "result": "other"}
    )
    assert status == 200 and again["result"] == [1, 2]
    failed = {"label": "b", "duration_ms": 1, "error": "ValueError: no"}
    status, f1 = await call(http, api, "POST", f"{RUNS}/d3/checkpoints", failed)
    assert status == 201 and f1["status"] == "failed" and f1["error"] == "ValueError: no"
    status, f2 = await call(http, api, "POST", f"{RUNS}/d3/checkpoints", failed)
    assert status == 200 and f2["step_number"] == f1["step_number"]
    assert (await written(api))[0] == before[0] + 2

    status, _ = await call(http, api, "PATCH", f"{RUNS}/d3", {"status": "completed"})
    assert status == 200
    ended = await written(api)
    status, doc = await call(http, api, "PATCH", f"{RUNS}/d3", {"status": "completed"})
    assert status == 200 and doc["output"] is None
    # Another output is another ending (issue 16): refused, the first output stands.
    finish = {"status": "completed", "output": "other"}
    status, err = await call(http, api, "PATCH", f"{RUNS}/d3", finish)
    assert status == 409 and "another output" in err["error"]["message"]
    status, err = await call(http, api, "PATCH", f"{RUNS}/d3", {"status": "failed"})
    assert status == 409 and "already completed" in err["error"]["message"]
    status, err = await call(
        http, api, "POST", f"{RUNS}/d3/checkpoints", {"label": "late", "duration_ms": 0}
    )
    assert status == 409
    # A label recorded before the run ended is still answered.
    status, _ = await call(http, api, "POST", f"{RUNS}/d3/checkpoints", post)
    assert status == 200
    assert await written(api) == ended


async def test_a_new_attempt_records_a_label_again(api: Api, http: Any) -> None:
    """After a divergence the code runs a recorded label live: a new step, as in direct mode."""
    await call(http, api, "POST", RUNS, {"run_id": "d4", "agent": "agent-a"})
    post = {"label": "a", "result": 1, "duration_ms": 0}
    await call(http, api, "POST", f"{RUNS}/d4/checkpoints", post)
    await call(http, api, "POST", RUNS, {"run_id": "d4", "agent": "agent-a"})
    status, cp = await call(http, api, "POST", f"{RUNS}/d4/checkpoints", {**post, "result": 2})
    assert status == 201 and cp["step_number"] == 1 and cp["attempt"] == 2


async def test_concurrent_checkpoints_never_share_a_step(api: Api, http: Any) -> None:
    _, opened = await call(http, api, "POST", RUNS, {"run_id": "d5", "agent": "agent-a"})
    posts = [
        call(
            http,
            api,
            "POST",
            f"{RUNS}/d5/checkpoints",
            {"label": f"t{i}", "result": i, "duration_ms": 0},
        )
        for i in range(20)
    ]
    answers = await asyncio.gather(*posts)
    assert all(status == 201 for status, _ in answers)
    assert sorted(cp["step_number"] for _, cp in answers) == list(range(20))
    same = [
        call(
            http,
            api,
            "POST",
            f"{RUNS}/d5/checkpoints",
            {"label": "same", "result": 1, "duration_ms": 0},
        )
        for _ in range(10)
    ]
    answers = await asyncio.gather(*same)
    assert sorted(status for status, _ in answers) == [200] * 9 + [201]
    assert len({cp["step_number"] for _, cp in answers}) == 1
    state = await api.app[keys.RUNS].load(opened["id"])
    labels = [s.label for s in state.steps]
    assert len(labels) == 21 and labels.count("same") == 1
    assert all(s.status == "completed" for s in state.steps)


async def test_an_api_key_is_required(api: Api, http: Any) -> None:
    await call(http, api, "POST", RUNS, {"run_id": "d6", "agent": "agent-a"})
    before = await written(api)
    requests = [
        ("POST", RUNS, {"run_id": "d7", "agent": "agent-a"}),
        ("GET", f"{RUNS}/d6", None),
        ("POST", f"{RUNS}/d6/checkpoints", {"label": "a", "duration_ms": 0}),
        ("PATCH", f"{RUNS}/d6", {"status": "completed"}),
    ]
    for method, path, body in requests:
        async with http.request(method, api.url + path, json=body) as resp:
            assert resp.status == 401, path
            assert (await resp.json())["error"]["code"] == "unauthorized"
        status, _ = await call(http, api, method, path, body, key="cpk_wrong_wrong_wrong_wrong")
        assert status == 401
    assert await written(api) == before


async def test_another_projects_run_is_not_found(api: Api, http: Any) -> None:
    await call(http, api, "POST", RUNS, {"run_id": "d8", "agent": "agent-a"})
    await call(http, api, "POST", f"{RUNS}/d8/checkpoints", {"label": "a", "duration_ms": 0})
    key = await other_key(http, api)
    before = await written(api)
    for method, path, body in [
        ("GET", f"{RUNS}/d8", None),
        ("POST", f"{RUNS}/d8/checkpoints", {"label": "b", "duration_ms": 0}),
        ("PATCH", f"{RUNS}/d8", {"status": "failed"}),
    ]:
        status, theirs = await call(http, api, method, path, body, key=key)
        missing = path.replace("d8", "nope")
        status_missing, absent = await call(http, api, method, missing, body, key=key)
        assert status == status_missing == 404
        assert theirs["error"]["code"] == absent["error"]["code"] == "run_not_found"
        assert theirs["error"]["message"].replace("d8", "nope") == absent["error"]["message"]
    status, err = await call(
        http, api, "POST", RUNS,
        {"run_id": "d9", "agent": "agent-a", "replay_of": "d8", "from_step": 0}, key=key,
    )  # fmt: skip
    assert status == 404 and "d8" in err["error"]["message"]
    assert await written(api) == before
    # Run ids are scoped to their project: the other project's d8 is a run of its own.
    status, doc = await call(http, api, "POST", RUNS, {"run_id": "d8", "agent": "x"}, key=key)
    assert status == 201 and doc["agent"] == "x" and doc["checkpoints"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", RUNS, {"run_id": "n1", "agent": "a", "surprise": 1}),
        ("POST", RUNS, {"run_id": "n1"}),
        ("POST", RUNS, {"run_id": "n 1", "agent": "a"}),
        ("POST", RUNS, {"run_id": "n" * 151, "agent": "a"}),
        ("POST", RUNS, {"run_id": "n1", "agent": ""}),
        ("POST", RUNS, {"run_id": "n1", "agent": "a", "replay_of": "d10"}),
        ("POST", RUNS, {"run_id": "n1", "agent": "other"}),
        ("POST", RUNS, ["not", "an", "object"]),
        ("POST", f"{RUNS}/d10/checkpoints", {"label": "a", "duration_ms": 0, "extra": True}),
        ("POST", f"{RUNS}/d10/checkpoints", {"label": "a"}),
        ("POST", f"{RUNS}/d10/checkpoints", {"label": "", "duration_ms": 0}),
        ("POST", f"{RUNS}/d10/checkpoints", {"label": "x" * 257, "duration_ms": 0}),
        ("POST", f"{RUNS}/d10/checkpoints", {"label": "a", "duration_ms": -1}),
        (
            "POST",
            f"{RUNS}/d10/checkpoints",
            {"label": "a", "duration_ms": 0, "result": 1, "error": "both"},
        ),
        (
            "POST",
            f"{RUNS}/d10/checkpoints",
            {"label": "a", "duration_ms": 0, "completed_at": "yesterday"},
        ),
        ("POST", f"{RUNS}/d10/checkpoints", {"label": "a", "duration_ms": 0, "kind": "tool"}),
        (
            "POST",
            f"{RUNS}/d10/checkpoints",
            {"label": "a", "duration_ms": 0, "kind": "llm", "llm": {"prompt_tokens": -1}},
        ),
        (
            "POST",
            f"{RUNS}/d10/checkpoints",
            {"label": "a", "duration_ms": 0, "kind": "llm", "llm": {"tokens": 1}},
        ),
        (
            "POST",
            f"{RUNS}/d10/checkpoints",
            {"label": "a", "duration_ms": 0, "llm": {"model": "m" * 201}},
        ),
        ("PATCH", f"{RUNS}/d10", {"status": "cancelled"}),
        ("PATCH", f"{RUNS}/d10", {"status": "completed", "error": "x"}),
        ("PATCH", f"{RUNS}/d10", {"status": "failed", "output": "x", "error": "y"}),
        ("PATCH", f"{RUNS}/d10", {}),
    ],
)
async def test_bad_requests_write_nothing(
    api: Api, http: Any, method: str, path: str, body: Any
) -> None:
    if path == RUNS and body == {"run_id": "n1", "agent": "other"}:
        await call(http, api, "POST", RUNS, {"run_id": "n1", "agent": "a"})
    await call(http, api, "POST", RUNS, {"run_id": "d10", "agent": "a"})
    before = await written(api)
    status, err = await call(http, api, method, path, body)
    assert status == 400, err
    assert err["error"]["code"] == "invalid_input" and err["error"]["message"]
    assert await written(api) == before


async def test_malformed_and_oversized_bodies(api: Api, http: Any) -> None:
    await call(http, api, "POST", RUNS, {"run_id": "d11", "agent": "a"})
    before = await written(api)
    status, err = await call(http, api, "POST", f"{RUNS}/d11/checkpoints", data=b'{"label": ')
    assert status == 400 and "malformed JSON" in err["error"]["message"]
    status, err = await call(http, api, "POST", RUNS, data=b"")
    assert status == 400
    huge = b'{"label": "a", "duration_ms": 0, "result": "' + b"x" * (1024 * 1024) + b'"}'
    status, err = await call(http, api, "POST", f"{RUNS}/d11/checkpoints", data=huge)
    assert status == 413
    assert await written(api) == before
    status, err = await call(http, api, "GET", f"{RUNS}/{'z' * 180}")
    assert status == 404


async def test_a_run_that_is_not_running_takes_no_checkpoints(api: Api, http: Any) -> None:
    status, projects = await call(http, api, "GET", "/v1/projects")
    queued = ev.RunQueued(run_id="d12", project_id=projects[0]["id"], agent_id="a")
    await api.app[keys.RUNS].queue(queued)
    status, err = await call(
        http, api, "POST", f"{RUNS}/d12/checkpoints", {"label": "a", "duration_ms": 0}
    )
    assert status == 409 and "queued" in err["error"]["message"]
    status, err = await call(http, api, "PATCH", f"{RUNS}/d12", {"status": "completed"})
    assert status == 409
    status, doc = await call(http, api, "POST", RUNS, {"run_id": "d12", "agent": "a"})
    assert (status, doc["status"], doc["attempt"]) == (200, "running", 1)


async def test_the_routes_are_in_openapi(api: Api, http: Any) -> None:
    async with http.get(api.url + "/openapi.json") as resp:
        spec = await resp.json()
    assert {"post"} <= set(spec["paths"][RUNS])
    assert {"get", "patch"} <= set(spec["paths"][RUNS + "/{run_id}"])
    assert "post" in spec["paths"][RUNS + "/{run_id}/checkpoints"]
    schemas = spec["components"]["schemas"]
    assert {"OpenRunBody", "CheckpointBody", "FinishRunBody", "DurableRun"} <= set(schemas)
    assert schemas["CheckpointBody"]["required"] == ["label", "duration_ms"]
