"""What only the published SDK's durable runs (``papayya.durable``) meet against our server:
a second process ending a finished run otherwise (its httpx error), and an outage that the
SDK journals and then delivers. The scenarios both clients share (checkpoints, resume,
complete, fail) are in ``test_durable_both_clients``."""

from __future__ import annotations

import aiohttp

from tests.support.api import Api
from tests.support.durable_clients import durable_run
from tests.support.published import Published, interactive, outage_relay

PRELUDE = """
import json, sys
from papayya.durable import papayya
client = papayya()
"""


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
