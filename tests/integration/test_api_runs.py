"""Runs over HTTP: queueing (idempotent), reading, listing, cancel, replay, resume, state."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import pytest

from papayya.domain import events as ev
from papayya.runs import Runs
from projections.runner import ProjectionRunner
from projections.runs import RunsProjector
from tests.support.api import Api, call, create_agent, default_project, new_project, page
from tests.support.db import db_fetch
from web import keys

RUN_PATHS = (
    ("GET", "/v1/runs/{id}"),
    ("GET", "/v1/runs/{id}/steps"),
    ("GET", "/v1/runs/{id}/state"),
    ("POST", "/v1/runs/{id}/cancel"),
    ("POST", "/v1/runs/{id}/replay"),
    ("POST", "/v1/runs/{id}/resume"),
)


async def start_run(
    api: Api, http: Any, body: dict[str, Any], key: str | None = None, status: int = 201
) -> dict[str, Any]:
    async with http.post(f"{api.url}/v1/runs", json=body, headers=api.headers(key)) as resp:
        assert resp.status == status, await resp.text()
        return dict(await resp.json())


async def get(api: Api, http: Any, path: str, key: str | None = None, **params: Any) -> Any:
    async with http.get(api.url + path, params=params, headers=api.headers(key)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def project_runs(api: Api, dsn: str, within: float = 20) -> None:
    """Bring the runs read model up to every run's latest version. Reads are fenced by the
    oldest open transaction on the whole server, so this polls; if the server runs its own
    projector, that one holds the leadership and catch_up just waits its turn."""
    store = api.app[keys.STORE]
    runner = ProjectionRunner(store, RunsProjector(store), dsn, retry_interval=0.05)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.catch_up(), 1)
        [lag] = await db_fetch(
            dsn,
            "SELECT (SELECT coalesce(sum(version), 0) FROM streams WHERE category = 'run')"
            " - (SELECT coalesce(sum(version), 0) FROM runs) AS behind",
        )
        if lag["behind"] == 0:
            return
        assert asyncio.get_running_loop().time() < deadline, "the runs projection is behind"
        await asyncio.sleep(0.05)


async def run_with_steps(api: Api, run_id: str, steps: int) -> Runs:
    """Drive a queued run through ``steps`` completed steps, as a worker would."""
    runs = api.app[keys.RUNS]
    state = await runs.load(run_id)
    events: list[ev.RunEvent] = [ev.RunStarted(attempt=1)]
    for n in range(steps):
        events += [
            ev.StepStarted(step_number=n, step_type="checkpoint", label=f"task-{n}"),
            ev.CheckpointSaved(step_number=n, label=f"task-{n}", fingerprint=f"f{n}", result=n),
            ev.StepCompleted(step_number=n, duration_ms=1.5, output=n),
        ]
    await runs.append(state, events)
    return runs


async def count_runs(dsn: str) -> int:
    return len(await db_fetch(dsn, "SELECT 1 FROM streams WHERE category = 'run'"))


async def test_queue_with_agent_defaults_and_overrides(api: Api, http: Any) -> None:
    agent = await create_agent(
        api, http, "writer", budget_input_tokens=1000, budget_total_tokens=5000
    )
    run = await start_run(api, http, {"agent_id": agent["id"], "input": "write a haiku"})
    assert run["id"].startswith("run_") and run["status"] == "queued"
    assert run["agent_id"] == agent["id"] and run["input"] == "write a haiku"
    assert run["budget_cents"] == 50 and run["max_steps"] == 7 and run["trigger"] == "api"
    assert run["created_at"] and run["current_step"] == 0
    assert await get(api, http, f"/v1/runs/{run['id']}") == run  # read your writes

    body = {
        "input": {"topic": "sea", "n": [1, 2]},
        "budget_cents": 125,
        "max_steps": 3,
        "model": "gpt-4.1",
        "budget_output_tokens": 99,
        "metadata": {"team": "a"},
        "callback_url": "https://example.com/hook",
    }
    async with http.post(
        f"{api.url}/v1/agents/writer/runs", json=body, headers=api.headers()
    ) as resp:
        assert resp.status == 201, await resp.text()
        other = await resp.json()
    assert other["input"] == {"topic": "sea", "n": [1, 2]}
    assert other["budget_cents"] == 125 and other["max_steps"] == 3
    state = await get(api, http, f"/v1/runs/{other['id']}/state")
    assert state["budget"] == {
        "micro_usd": 1_250_000,
        "input_tokens": 1000,
        "output_tokens": 99,
        "total_tokens": 5000,
    }
    assert state["metadata"] == {"team": "a", "papayya.model": "gpt-4.1"}
    assert state["callback_url"] == "https://example.com/hook"
    assert state["loop_threshold"] == 5  # the agent's, for the gateway's loop detection
    # An agent with no budget gives runs its project's defaults; a project set to no limit,
    # none.
    free = await create_agent(api, http, "free", budget_usd=None, max_steps=None)
    run = await start_run(api, http, {"agent_id": free["slug"]})
    assert run["budget_cents"] == 500 and run["max_steps"] == 50 and run["input"] is None
    unlimited = {"default_budget_cents": None, "default_max_steps": None}
    project = f"/v1/projects/{await default_project(api, http)}"
    assert (await call(api, http, "PATCH", project, unlimited))[0] == 200
    run = await start_run(api, http, {"agent_id": free["slug"]})
    assert run["budget_cents"] is None and run["max_steps"] is None


async def test_idempotency_key_concurrent_repeats_make_one_run(
    api: Api, http: Any, dsn: str
) -> None:
    agent = await create_agent(api, http, "idem")
    body = {"agent_id": agent["id"], "input": "once", "idempotency_key": "order-42"}

    async def post() -> tuple[int, str]:
        async with http.post(f"{api.url}/v1/runs", json=body, headers=api.headers()) as resp:
            assert resp.status in (200, 201), await resp.text()
            return resp.status, (await resp.json())["id"]

    answers = await asyncio.gather(*(post() for _ in range(10)))
    assert len({run_id for _, run_id in answers}) == 1
    assert sorted(status for status, _ in answers) == [200] * 9 + [201]
    assert await count_runs(dsn) == 1
    run_id = answers[0][1]
    assert (await get(api, http, f"/v1/runs/{run_id}"))["idempotency_key"] == "order-42"
    # Keys are per project: another project's same key makes its own run.
    _, other_key = await new_project(api, http)
    theirs = await create_agent(api, http, "idem", key=other_key)
    other = await start_run(api, http, {**body, "agent_id": theirs["id"]}, key=other_key)
    assert other["id"] != run_id


async def test_idempotency_key_claimed_by_a_request_that_died(
    api: Api, http: Any, dsn: str
) -> None:
    """A request that claimed its key and died before appending: a retry completes it."""
    agent = await create_agent(api, http, "phoenix")
    [project] = await db_fetch(dsn, "SELECT project_id FROM agents")
    await db_fetch(
        dsn,
        "INSERT INTO run_idempotency (project_id, idempotency_key, run_id)"
        " VALUES ($1, 'k1', 'run_claimed')",
        project["project_id"],
    )
    body = {"agent_id": agent["id"], "idempotency_key": "k1"}
    run = await start_run(api, http, body, status=200)
    assert run["id"] == "run_claimed" and run["status"] == "queued"
    assert (await start_run(api, http, body, status=200))["id"] == "run_claimed"
    assert await count_runs(dsn) == 1


async def test_list_filters_and_pages(api: Api, http: Any, dsn: str) -> None:
    a = await create_agent(api, http, "lister-a")
    b = await create_agent(api, http, "lister-b")
    made = [
        (await start_run(api, http, {"agent_id": (a if i % 3 else b)["id"], "input": i}))["id"]
        for i in range(8)
    ]
    async with http.post(f"{api.url}/v1/runs/{made[0]}/cancel", headers=api.headers()) as r:
        assert r.status == 200
    await project_runs(api, dsn)
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        items, cursor = await page(api, http, "/v1/runs", **params)
        seen += [r["id"] for r in items]
        pages += 1
        if cursor is None:
            break
    assert pages == 3 and seen == made[::-1]
    by_b = await get(api, http, "/v1/runs", agent_id=b["id"])
    assert [r["id"] for r in by_b] == [made[6], made[3], made[0]]
    assert await get(api, http, "/v1/runs", agent_id="lister-b") == by_b
    cancelled = await get(api, http, "/v1/runs", status="cancelled")
    assert [r["id"] for r in cancelled] == [made[0]]
    assert cancelled[0]["status"] == "cancelled"
    both, more = await page(api, http, "/v1/runs", status="queued", agent_id=a["id"], limit=2)
    assert [r["id"] for r in both] == [made[7], made[5]] and more
    for bad in ({"status": "sleeping"}, {"cursor": "zzz"}, {"limit": "201"}):
        async with http.get(f"{api.url}/v1/runs", params=bad, headers=api.headers()) as resp:
            assert resp.status == 400, bad
    listed = (await get(api, http, "/v1/runs", limit=1))[0]
    assert listed == await get(api, http, f"/v1/runs/{listed['id']}")


async def test_cancel(api: Api, http: Any) -> None:
    agent = await create_agent(api, http, "stopper")
    queued = await start_run(api, http, {"agent_id": agent["id"]})
    url = f"{api.url}/v1/runs/{queued['id']}/cancel"
    async with http.post(url, json={"reason": "changed my mind"}, headers=api.headers()) as r:
        assert r.status == 200
        done = await r.json()
    assert done["status"] == "cancelled" and done["error_message"] == "changed my mind"
    async with http.post(url, headers=api.headers()) as r:
        assert r.status == 409
        assert (await r.json())["error"]["code"] == "conflict"
    types = [type(e).__name__ for e in await api.app[keys.RUNS].events(queued["id"])]
    assert types == ["RunQueued", "CancelRequested", "RunCancelled"]

    # A running run is asked to stop; its worker records RunCancelled later.
    running = await start_run(api, http, {"agent_id": agent["id"]})
    runs = await run_with_steps(api, running["id"], 1)
    url = f"{api.url}/v1/runs/{running['id']}/cancel"
    async with http.post(url, headers=api.headers()) as r:
        assert r.status == 200 and (await r.json())["status"] == "running"
    state = await runs.load(running["id"])
    assert state.cancel_requested and state.status == "running"
    async with http.post(url, headers=api.headers()) as r:  # asking again changes nothing
        assert r.status == 200
    assert (await runs.load(running["id"])).version == state.version
    async with http.post(url, data=b"{bad", headers=api.headers()) as r:
        assert r.status == 400


async def test_replay_makes_a_linked_run(api: Api, http: Any, dsn: str) -> None:
    agent = await create_agent(api, http, "replayer")
    source = await start_run(api, http, {"agent_id": agent["id"], "input": {"q": 1}})
    await run_with_steps(api, source["id"], 3)
    url = f"{api.url}/v1/runs/{source['id']}/replay"
    h = api.headers()
    async with http.post(url, json={"from_step": 2, "input": {"q": 2}}, headers=h) as r:
        assert r.status == 201, await r.text()
        replay = await r.json()
    assert replay["id"] != source["id"] and replay["status"] == "queued"
    assert replay["replayed_from"] == source["id"] and replay["replay_from_step"] == 2
    assert replay["input"] == {"q": 2} and replay["trigger"] == "replay"
    assert replay["budget_cents"] == source["budget_cents"]
    replay_state = await get(api, http, f"/v1/runs/{replay['id']}/state")
    assert replay_state["loop_threshold"] == 5 and replay_state["max_steps"] == 7
    async with http.post(url, json={"from_step": 3}, headers=h) as r:  # all recorded steps
        assert r.status == 201 and (await r.json())["input"] == {"q": 1}
    async with http.post(url, json={"from_step": 0, "input": None}, headers=h) as r:
        assert r.status == 201 and (await r.json())["input"] is None
    before = await count_runs(dsn)
    for bad in ({"from_step": 4}, {"from_step": -1}, {}, {"from_step": 1, "x": 1}):
        async with http.post(url, json=bad, headers=h) as r:
            assert r.status == 400, bad
    # The agent moved to another deployment: replaying needs an explicit opt-in.
    await db_fetch(
        dsn,
        'UPDATE agents SET config = config || \'{"deployment_version": "v2"}\' WHERE agent_id = $1',
        agent["id"],
    )
    async with http.post(url, json={"from_step": 1}, headers=h) as r:
        assert r.status == 409
    assert await count_runs(dsn) == before
    body = {"from_step": 1, "allow_version_mismatch": True}
    async with http.post(url, json=body, headers=h) as r:
        assert r.status == 201
        assert (await r.json())["deployment_version"] == "v2"
    steps = await get(api, http, f"/v1/runs/{source['id']}/steps")
    assert len(steps) == 3  # the source is untouched


async def test_resume_only_budget_exceeded(api: Api, http: Any, dsn: str) -> None:
    agent = await create_agent(api, http, "spender")
    run = await start_run(api, http, {"agent_id": agent["id"], "budget_cents": 10})
    url = f"{api.url}/v1/runs/{run['id']}/resume"
    h = api.headers()
    async with http.post(url, json={"budget_cents": 20}, headers=h) as r:
        assert r.status == 409  # a queued run has nothing to resume
    runs = api.app[keys.RUNS]
    state = await runs.load(run["id"])
    await runs.append(
        state,
        [
            ev.RunStarted(attempt=1),
            ev.BudgetReserved(reservation_id="r1", amount_micro_usd=90_000),
            ev.BudgetSettled(reservation_id="r1", actual_micro_usd=90_000),
            ev.BudgetExceeded(message="out of money", limit="usd"),
        ],
    )
    assert (await get(api, http, f"/v1/runs/{run['id']}"))["status"] == "budget_exceeded"
    for bad, status in (({}, 400), ({"budget_cents": "5"}, 400), ({"budget_cents": 9}, 409)):
        async with http.post(url, json=bad, headers=h) as r:
            assert r.status == status, bad
    async with http.post(url, json={"budget_cents": 30}, headers=h) as r:
        assert r.status == 200, await r.text()
        resumed = await r.json()
    assert resumed["status"] == "queued" and resumed["budget_cents"] == 30
    assert resumed["error_code"] is None
    async with http.post(url, json={"budget_cents": 40}, headers=h) as r:
        assert r.status == 409


async def test_steps_and_state_at_step(api: Api, http: Any) -> None:
    agent = await create_agent(api, http, "stepper")
    run = await start_run(api, http, {"agent_id": agent["id"], "input": "go"})
    assert (await get(api, http, f"/v1/runs/{run['id']}/steps")) == []
    await run_with_steps(api, run["id"], 3)
    steps = await get(api, http, f"/v1/runs/{run['id']}/steps")
    assert [s["step_number"] for s in steps] == [0, 1, 2]
    assert steps[1]["step_type"] == "checkpoint" and steps[1]["label"] == "task-1"
    assert steps[1]["status"] == "completed" and steps[1]["output"] == 1
    at = await get(api, http, f"/v1/runs/{run['id']}/state", at_step=1)
    assert [s["step_number"] for s in at["steps"]] == [0, 1]
    assert at["status"] == "running" and at["input"] == "go" and at["run_id"] == run["id"]
    now = await get(api, http, f"/v1/runs/{run['id']}/state")
    assert len(now["steps"]) == 3 and now["version"] > at["version"]
    assert (await get(api, http, f"/v1/runs/{run['id']}"))["current_step"] == 3
    for params, status in (({"at_step": 3}, 404), ({"at_step": -1}, 400), ({"at_step": "x"}, 400)):
        async with http.get(
            f"{api.url}/v1/runs/{run['id']}/state", params=params, headers=api.headers()
        ) as r:
            assert r.status == status, params
            assert (await r.json())["error"]["code"]


async def test_key_required(api: Api, http: Any) -> None:
    agent = await create_agent(api, http, "guarded")
    run = await start_run(api, http, {"agent_id": agent["id"]})
    paths = [
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs"),
        ("POST", f"/v1/agents/{agent['id']}/runs"),
        *((m, p.format(id=run["id"])) for m, p in RUN_PATHS),
    ]
    for method, path in paths:
        async with http.request(method, api.url + path, json={"from_step": 0}) as resp:
            assert resp.status == 401, (method, path)
            assert (await resp.json())["error"]["code"] == "unauthorized"
    async with http.get(
        f"{api.url}/v1/runs/{run['id']}", headers={"Authorization": f"Bearer {api.key}"}
    ) as resp:
        assert resp.status == 200


async def test_other_projects_runs_are_not_found(api: Api, http: Any, dsn: str) -> None:
    _, other_key = await new_project(api, http)
    mine = await create_agent(api, http, "same-slug")
    theirs = await create_agent(api, http, "same-slug", key=other_key)
    my_run = await start_run(api, http, {"agent_id": mine["id"]})
    their_run = await start_run(api, http, {"agent_id": theirs["id"]}, key=other_key)
    await project_runs(api, dsn)
    before = await count_runs(dsn)
    for key, run, agent in [(api.key, their_run, theirs), (other_key, my_run, mine)]:
        h = api.headers(key)
        for method, path in RUN_PATHS:
            body = {"replay": {"from_step": 0}, "resume": {"budget_cents": 1}}.get(
                path.rsplit("/", 1)[-1], {}
            )
            async with http.request(
                method, api.url + path.format(id=run["id"]), json=body, headers=h
            ) as resp:
                assert resp.status == 404, (method, path)
                assert (await resp.json())["error"]["code"] == "run_not_found"
        async with http.post(
            f"{api.url}/v1/runs", json={"agent_id": agent["id"]}, headers=h
        ) as resp:
            assert resp.status == 404
        async with http.post(f"{api.url}/v1/agents/{agent['id']}/runs", json={}, headers=h) as r:
            assert r.status == 404
        listed = await get(api, http, "/v1/runs", key=key)
        assert [r["id"] for r in listed] != [run["id"]]
        assert run["id"] not in {r["id"] for r in listed}
        assert (await get(api, http, "/v1/runs", key=key, agent_id=agent["id"])) == []
    assert await count_runs(dsn) == before
    # By slug, each key reaches its own agent.
    async with http.post(
        f"{api.url}/v1/agents/same-slug/runs", json={}, headers=api.headers(other_key)
    ) as r:
        assert r.status == 201 and (await r.json())["agent_id"] == theirs["id"]


async def test_bad_bodies_write_nothing(api: Api, http: Any, dsn: str) -> None:
    agent = await create_agent(api, http, "careful")
    h = {**api.headers(), "Content-Type": "application/json"}
    ok = b'"agent_id": "' + agent["id"].encode() + b'", "idempotency_key": "k"'
    cases = [
        (b"", 400),
        (b"{nope", 400),
        (b"[1]", 400),
        (b'{"input": "no agent"}', 400),
        (b"{" + ok + b', "extra": true}', 400),
        (b"{" + ok + b', "budget_cents": -1}', 400),
        (b"{" + ok + b', "budget_cents": "12"}', 400),
        (b"{" + ok + b', "max_steps": 0}', 400),
        (b"{" + ok + b', "metadata": []}', 400),
        (b"{" + ok + b', "metadata": {"papayya.model": "x"}}', 400),
        (b"{" + ok + b', "callback_url": "ftp://x"}', 400),
        (b"{" + ok + b', "idempotency_key": ""}', 400),
        (b"{" + ok + b', "input": "nul \\u0000 here"}', 400),
        (b'{"agent_id": "agent_missing", "idempotency_key": "k"}', 404),
        # Fits the request limit, not an event: refused before the key is claimed.
        (b"{" + ok + b', "input": "' + b"x" * 300_000 + b'"}', 413),
        (b"{" + ok + b', "input": "' + b"x" * (1024 * 1024) + b'"}', 413),
    ]
    for raw, status in cases:
        async with http.post(f"{api.url}/v1/runs", data=io.BytesIO(raw), headers=h) as resp:
            assert resp.status == status, raw[:80]
            body = await resp.json()
            assert body["error"]["code"] and body["error"]["message"]
        if ok in raw:  # the same body without agent_id, to the agent's own path
            async with http.post(
                f"{api.url}/v1/agents/{agent['id']}/runs",
                data=io.BytesIO(raw.replace(ok, b'"idempotency_key": "k"')),
                headers=h,
            ) as resp:
                assert resp.status == status, raw[:80]
    assert await count_runs(dsn) == 0
    assert await db_fetch(dsn, "SELECT * FROM run_idempotency") == []
    run = await start_run(api, http, {"agent_id": agent["id"]})
    before = await api.app[keys.RUNS].load(run["id"])
    for path, raw in [
        ("cancel", b'{"reason": 5}'),
        ("cancel", b'{"why": "x"}'),
        ("replay", b'{"from_step": "1"}'),
        ("replay", b"{"),
        ("resume", b'{"budget_cents": -5}'),
        ("resume", b'{"budget": 5}'),
    ]:
        async with http.post(
            f"{api.url}/v1/runs/{run['id']}/{path}", data=io.BytesIO(raw), headers=h
        ) as resp:
            assert resp.status == 400, (path, raw)
    assert (await api.app[keys.RUNS].load(run["id"])).version == before.version
    assert await count_runs(dsn) == 1
    async with http.get(f"{api.url}/v1/runs/run_missing", headers=h) as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "run_not_found"
    async with http.get(f"{api.url}/v1/runs/{'x' * 180}/steps", headers=h) as resp:
        assert resp.status == 404


async def test_openapi_describes_agents_and_runs(api: Api, http: Any) -> None:
    async with http.get(f"{api.url}/openapi.json") as resp:
        spec = await resp.json()
    paths = spec["paths"]
    assert {"post", "get"} <= set(paths["/v1/agents"]) and "patch" in paths["/v1/agents/{id}"]
    assert "post" in paths["/v1/agents/{id}/runs"]
    for suffix in ("", "/steps", "/state", "/cancel", "/replay", "/resume"):
        assert f"/v1/runs/{{id}}{suffix}" in paths
    listed = {p["name"] for p in paths["/v1/runs"]["get"]["parameters"]}
    assert {"limit", "cursor", "agent_id", "status"} <= listed
    answer = paths["/v1/runs"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["type"] == "array"
    assert {"Link", "X-Next-Cursor"} <= set(answer["headers"])
    schemas = spec["components"]["schemas"]
    for name in ("CreateAgent", "PatchAgent", "AgentOut", "CreateRun", "RunOut", "ReplayRun"):
        assert name in schemas
    assert schemas["CreateRun"]["additionalProperties"] is False


async def test_the_server_keeps_the_runs_list_current(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: Any
) -> None:
    """No test-driven catch-up here: the server's own projectors fill the list."""
    from tests.support.api import running_api

    async with running_api(dsn, monkeypatch, projectors=True) as live:
        agent = await create_agent(live, http, "live-list")
        async with http.post(
            f"{live.url}/v1/agents/{agent['id']}/runs", json={"input": "x"}, headers=live.headers()
        ) as resp:
            run = await resp.json()
        for _ in range(200):
            async with http.get(f"{live.url}/v1/runs", headers=live.headers()) as resp:
                if [r["id"] for r in (await resp.json())] == [run["id"]]:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("the runs list never showed the new run")


async def test_a_new_run_is_listed_at_once(api: Api, http: Any) -> None:
    """Read your writes: the list shows a run as soon as its creation answered, every time,
    with no projector running (the list reads what the append wrote)."""
    agent = await create_agent(api, http, "read-your-writes")
    for i in range(200):
        async with http.post(
            f"{api.url}/v1/agents/{agent['id']}/runs", json={"input": i}, headers=api.headers()
        ) as resp:
            assert resp.status == 201, await resp.text()
            run = await resp.json()
        newest, _ = await page(api, http, "/v1/runs", limit=1)
        assert [r["id"] for r in newest] == [run["id"]], i
        assert newest[0]["status"] == "queued" and newest[0]["input"] == i
