"""The published SDK's ``Client.run_sync`` runs an agent made of configuration alone (issue 17):
the request the hosted API takes (``model``, ``system_prompt``, ``max_steps``,
``budget_cents``) reaches the built-in loop on a worker, and the answer comes back. The same
script runs with our package's ``Client`` too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fakellm import Reply
from tests.support.cloud import Cloud, running_cloud
from tests.support.published import Published, our_venv

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


@pytest.mark.parametrize("package", ["published", "ours"])
async def test_run_sync_returns_the_built_in_loops_answer(
    cloud: Cloud, published_sdk: Path, tmp_path: Path, package: str
) -> None:
    body = {"name": "Helper", "slug": "helper", "config": {"model": "gpt-4o-mini"}}
    status, agent = await cloud.call("POST", "/v1/agents", body)
    assert status == 201, agent
    cloud.fake.script.append(Reply(text="Durable execution survives crashes."))
    home = tmp_path / "user"
    home.mkdir()
    venv = published_sdk if package == "published" else our_venv()
    published = Published(venv, cloud.url, cloud.key, home)
    answer = await published.script(
        "import json\n"
        "from papayya import Client\n"
        "result = Client().run_sync("
        f"{agent['id']!r}, 'What is durable execution?', system_prompt='Answer briefly.', "
        "poll_interval=0.1, timeout=60)\n"
        "print(json.dumps({'output': str(result), 'run_id': result.run_id,"
        " 'status': result.status}))\n"
    )
    assert answer["status"] == "completed"
    assert answer["output"] == "Durable execution survives crashes."
    run = await cloud.runs.load(answer["run_id"])
    assert run.status == "completed" and run.llm_calls == 1
    assert run.budget.micro_usd == 5_000_000 and run.max_steps == 50  # the SDK's defaults
    # The system prompt the SDK sent is what the model was given, with the user's question.
    [request] = cloud.fake.stats.requests
    messages = request.body["messages"]
    assert messages[0] == {"role": "system", "content": "Answer briefly."}
    assert "What is durable execution?" in json.dumps(messages[1:])
