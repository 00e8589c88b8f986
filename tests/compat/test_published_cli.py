"""The published CLI (``papayya`` from ``papayya==0.2.0``) against our server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fakellm import Reply
from tests.support.api import Api, default_project
from tests.support.cloud import Cloud, running_cloud
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


async def test_secrets(published: Published, api: Api, http: aiohttp.ClientSession) -> None:
    project = await default_project(api, http)

    async def cli(*args: str) -> str:
        code, out, err = await published.cli("secrets", *args, PAPAYYA_PROJECT_ID=project)
        assert code == 0, err
        return out

    assert await cli("list") == "No secrets found.\n"
    assert await cli("set", "SEARCH_API_KEY", "s3cret-value") == (
        "Secret 'SEARCH_API_KEY' set successfully.\n"
    )
    listed = await cli("list")
    assert listed.startswith("  SEARCH_API_KEY  (updated: 20") and "s3cret" not in listed
    assert await cli("delete", "SEARCH_API_KEY") == "Secret 'SEARCH_API_KEY' deleted.\n"
    assert await cli("list") == "No secrets found.\n"
    # Deleting it again is refused, with the server's answer and a non-zero exit.
    code, _, err = await published.cli(
        "secrets", "delete", "SEARCH_API_KEY", PAPAYYA_PROJECT_ID=project
    )
    assert code != 0 and "404" in err


# What `papayya run` reads: the agent's model, instructions and limits from its @agent.
AGENT_FILE = """
from papayya import agent


@agent(name="helper", model="gpt-4o-mini", instructions="Answer briefly.", max_steps=7,
       budget_usd=0.25)
def helper(task):
    return task
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


@pytest.mark.timeout(120)
async def test_run_by_slug_follows_the_run_to_its_answer(
    cloud: Cloud, published_sdk: Path, tmp_path: Path
) -> None:
    body = {"name": "Helper", "slug": "helper", "config": {"model": "gpt-4o-mini"}}
    status, made = await cloud.call("POST", "/v1/agents", body)
    assert status == 201, made
    cloud.fake.script.append(Reply(text="Durable execution survives crashes."))
    home = tmp_path / "user"
    home.mkdir()
    (home / "agent.py").write_text(AGENT_FILE)
    published = Published(published_sdk, cloud.url, cloud.key, home)
    code, out, err = await published.cli(
        "run", "helper", "What is durable execution?", PAPAYYA_PROJECT_ID=made["project_id"]
    )
    assert code == 0, err + out
    run_id = out.split("Run triggered: ", 1)[1].split()[0]
    assert "Final status: completed" in out and "Step 0 [response]" in out, out
    run = await cloud.runs.load(run_id)
    assert run.status == "completed" and run.agent_id == made["id"]
    # The answer is the run's output; a model step's text stays in its payload, so the CLI
    # prints no content for it (docs/compatibility.md).
    assert run.output == "Durable execution survives crashes."
    # The limits and the system prompt come from the @agent, as the hosted CLI sends them.
    assert run.max_steps == 7 and run.budget.micro_usd == 250_000
    [request] = cloud.fake.stats.requests
    assert request.body["messages"][0] == {"role": "system", "content": "Answer briefly."}
