"""The published CLI (``papayya`` from ``papayya==0.2.0``) against our server."""

from __future__ import annotations

import json

import aiohttp

from tests.support.api import Api, default_project
from tests.support.published import Published

RUN = """
import json
from papayya.durable import papayya
run = papayya().run(agent="cli-agent", run_id="cli-run")
run.step("search", lambda: {"hits": 2})()
run.step("answer", lambda: "two")()
run.complete("two")
print(json.dumps(run.run_id))
"""


async def test_status_and_logs(published: Published, api: Api, http: aiohttp.ClientSession) -> None:
    await published.script(RUN)
    async with http.get(f"{api.url}/v1/durable/runs/cli-run", headers=api.headers()) as resp:
        run_id = (await resp.json())["id"]
    code, out, err = await published.cli("status", run_id)
    assert code == 0, err
    assert f"Run:    {run_id}" in out and "Status: completed" in out
    code, out, err = await published.cli("logs", run_id)
    assert code == 0, err
    # Our steps count from 0 (docs/compatibility.md).
    assert "Step 0 [checkpoint] — completed" in out and "Step 1 [checkpoint] — completed" in out


async def test_rate_card(published: Published, api: Api, http: aiohttp.ClientSession) -> None:
    project = await default_project(api, http)

    async def cli(*args: str) -> str:
        code, out, err = await published.cli(*args, PAPAYYA_PROJECT_ID=project)
        assert code == 0, err
        return out

    assert json.loads(await cli("rate-card", "show")) == {}
    await cli("rate-card", "set", "my-model", "--input-per-million", "3",
              "--output-per-million", "15")  # fmt: skip
    card = json.loads(await cli("rate-card", "show"))["my-model"]
    assert (card["input_cents_per_million"], card["output_cents_per_million"]) == (300, 1500)
    # The CLI writes back what it read (both units): accepted, one meaning.
    await cli("rate-card", "set", "other", "--input-per-million", "0.5",
              "--output-per-million", "1")  # fmt: skip
    await cli("rate-card", "remove", "my-model")
    card = json.loads(await cli("rate-card", "show"))
    assert list(card) == ["other"] and card["other"]["input_per_million_usd"] == "0.5"
