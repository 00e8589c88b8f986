"""A run that asks for the built-in loop (``"runtime": "builtin"``) while its agent has a
deployment runs the agent's configuration instead of its code (issue 17 §2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fakellm import Reply
from tests.support.cloud import Cloud, running_cloud
from web import keys

pytestmark = pytest.mark.timeout(120)

CODED = """
from papayya import agent

@agent
def coded(task):
    return {"by": "code"}
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as c:
        yield c


async def test_a_run_asking_for_the_builtin_loop_runs_the_config_not_the_deployment(
    cloud: Cloud,
) -> None:
    await cloud.register("coded", CODED, model="gpt-4o-mini", instructions="Be brief.")
    by_code = await cloud.wait(await cloud.start("coded", input="hi"))
    assert by_code.status == "completed" and by_code.output == {"by": "code"}
    before = cloud.fake.stats.total
    cloud.fake.script.append(Reply(text="From the configuration."))
    looped = await cloud.wait(await cloud.start("coded", input="hi", runtime="builtin"))
    assert looped.status == "completed", (looped.error_code, looped.error_message)
    assert looped.output == "From the configuration."
    assert [s.step_type for s in looped.steps] == ["response"] and looped.llm_calls == 1
    assert cloud.fake.stats.total == before + 1
    request = cloud.fake.stats.requests[-1].body
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    "body",
    [{"runtime": "docker"}, {"runtime": 1}, {"runtime": "builtin"},
     {"metadata": {"papayya.runtime": "builtin"}}],
)  # fmt: skip
async def test_a_bad_runtime_request_is_refused_and_writes_nothing(
    cloud: Cloud, body: dict[str, Any]
) -> None:
    await cloud.register("nomodel", CODED)  # no model: the loop cannot run it
    status, answer = await cloud.call("POST", "/v1/agents/nomodel/runs", body)
    assert status == 400, answer
    assert "error" in answer
    pool = cloud.app[keys.STORE].pool
    assert await pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'run-%'") == 0
