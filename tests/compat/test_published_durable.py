"""The published SDK's durable runs (``papayya.durable``) against our server: checkpoints,
resume, ending a run, and an outage that the SDK journals and then delivers."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.support.api import Api
from tests.support.published import Published, interactive, outage_relay

PRELUDE = """
import json, sys
from papayya.durable import papayya
client = papayya()
"""


async def durable_run(api: Api, http: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    async with http.get(f"{api.url}/v1/durable/runs/{run_id}", headers=api.headers()) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def test_checkpoints_resume_and_complete(
    published: Published, api: Api, http: aiohttp.ClientSession
) -> None:
    first = await published.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-1")
search = run.step("search", lambda q: {"hits": [q, q]})
hits = search("papayya")
summary = run.task("summarize", lambda h: len(h["hits"]))(hits)
print(json.dumps({"hits": hits, "summary": summary, "done": run.completed_tasks}))
"""
    )
    assert first == {
        "hits": {"hits": ["papayya"] * 2},
        "summary": 2,
        "done": ["search", "summarize"],
    }
    # A restart with the same run id replays both results without running the functions.
    second = await published.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-1")
boom = lambda *a: (_ for _ in ()).throw(AssertionError("ran again"))
hits = run.step("search", boom)("papayya")
summary = run.step("summarize", boom)(hits)
result = run.complete({"summary": summary})
print(json.dumps({"summary": summary, "status": result.status,
                  "labels": [t.label for t in result.tasks], "run_id": result.run_id}))
"""
    )
    assert second == {
        "summary": 2,
        "status": "completed",
        "labels": ["search", "summarize"],
        "run_id": "r-1",
    }
    doc = await durable_run(api, http, "r-1")
    assert doc["status"] == "completed"
    assert doc["output"] == {"summary": 2}
    assert [c["label"] for c in doc["checkpoints"]] == ["search", "summarize"]


async def test_fail_with_a_message_ends_the_run(
    published: Published, api: Api, http: aiohttp.ClientSession
) -> None:
    answer = await published.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-fail")
run.step("one", lambda: 1)()
print(json.dumps(run.fail("boom").status))
"""
    )
    assert answer == "failed"
    doc = await durable_run(api, http, "r-fail")
    assert doc["status"] == "failed"
    assert "boom" in (doc["error_message"] or "")


async def test_fail_without_an_error_ends_the_run(
    published: Published, api: Api, http: aiohttp.ClientSession
) -> None:
    await published.script(
        PRELUDE
        + """
run = client.run(agent="researcher", run_id="r-fail-bare")
run.step("one", lambda: 1)()
print(json.dumps(run.fail().status))
"""
    )
    assert (await durable_run(api, http, "r-fail-bare"))["status"] == "failed"


async def test_a_second_complete_that_differs_is_a_conflict(
    published: Published, api: Api, http: aiohttp.ClientSession
) -> None:
    await published.script(
        PRELUDE + 'run = client.run(agent="a", run_id="r-twice")\nrun.complete(1)\nprint(1)'
    )
    # The published SDK refuses a second complete on the same object; a second process that
    # ends the run otherwise is told so, and the first output stands.
    answer = await published.script(
        PRELUDE
        + """
import httpx
run = client.run(agent="a", run_id="r-twice")
try:
    run.complete(2)
except httpx.HTTPStatusError as exc:
    print(json.dumps(exc.response.status_code))
"""
    )
    assert answer == 409
    assert (await durable_run(api, http, "r-twice"))["output"] == 1


OUTAGE = (
    PRELUDE
    + """
run = client.run(agent="researcher", run_id="r-outage")
run.step("before", lambda: "b")()
print("cut", flush=True); sys.stdin.readline()
run.step("during-1", lambda: 1)()
run.step("during-2", lambda: {"two": 2})()
print("journaled", flush=True); sys.stdin.readline()
run.step("after", lambda: "a")()
result = run.complete("done")
print(json.dumps(result.status))
"""
)


async def test_checkpoints_journaled_in_an_outage_are_delivered(
    published: Published, api: Api, http: aiohttp.ClientSession
) -> None:
    async with outage_relay(api.url) as relay:
        behind = Published(published.venv, relay.url, published.key, published.home)
        async with interactive(behind, OUTAGE) as script:
            await script.until("cut")
            await relay.cut()
            await script.go()
            await script.until("journaled")
            journaled = published.journal.read_text().splitlines()
            assert len(journaled) == 2
            await relay.restore()
            await script.go()
            assert await script.finish() == "completed"
    assert not published.journal.exists() or published.journal.read_text() == ""
    doc = await durable_run(api, http, "r-outage")
    assert doc["status"] == "completed"
    assert doc["output"] == "done"
    results = {c["label"]: c["result"] for c in doc["checkpoints"]}
    assert results == {"before": "b", "during-1": 1, "during-2": {"two": 2}, "after": "a"}
    late = {c["label"]: c for c in doc["checkpoints"] if c["journaled_at"] is not None}
    assert sorted(late) == ["during-1", "during-2"]
    assert all(c["delivery_attempts"] == 6 for c in late.values())
