"""``POST /v1/agents/{id}/deploy`` without an engine: what is accepted, what is refused, and
that a refusal stores nothing (no blob, no row, no event)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from papayya import bundles
from server.builds import BuildService
from tests.support.api import Api, create_agent, new_project, running_api
from tests.support.cloud import bundle_bytes, running_cloud
from tests.support.db import db_fetch
from web.routes import deploy as deploy_routes

AGENT = b"""
from papayya import agent

@agent
def hello(task):
    return {"hello": task["name"]}
"""


GOOD = bundle_bytes(("agent.py", AGENT), ("requirements.txt", b"openai\n"))


@pytest.fixture
async def api_here(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Api]:
    """The API with its data dir (blobs, unpacked bundles) under the test's directory; image
    builds are not started (no engine here: tests/docker covers them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAPAYYA_S3_BUCKET", raising=False)
    monkeypatch.setattr(BuildService, "submit", lambda self, dep_id: None)
    async with running_api(dsn, monkeypatch) as running:
        yield running


async def post_bundle(
    api: Api,
    http: Any,
    agent: str,
    content: bytes | None = GOOD,
    key: str | None = None,
    **fields: str,
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    if content is not None:
        form.add_field("file", content, filename="b.tar.gz", content_type="application/gzip")
    async with http.post(
        f"{api.url}/v1/agents/{agent}/deploy", data=form, headers=api.headers(key)
    ) as resp:
        return resp.status, await resp.json()


async def nothing_stored(dsn: str, tmp_path: Path) -> None:
    assert await db_fetch(dsn, "SELECT 1 FROM deployments") == []
    assert await db_fetch(dsn, "SELECT 1 FROM events WHERE category = 'deployment'") == []
    blobs = tmp_path / ".papayya" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


async def test_a_bundle_is_stored_and_its_deployment_is_building(
    api_here: Api, http: Any, dsn: str, tmp_path: Path
) -> None:
    await create_agent(api_here, http, "hello-bot")
    status, body = await post_bundle(api_here, http, "hello-bot", runtime="docker")
    assert status == 202, body
    assert body["status"] == "building" and body["version"] == 1
    assert body["runtime"] == "docker" and body["entrypoint"] == "agent.py"
    async with http.get(
        f"{api_here.url}/v1/deployments/{body['id']}", headers=api_here.headers()
    ) as resp:
        assert (await resp.json())["status"] == "building"
    (row,) = await db_fetch(dsn, "SELECT source, bundle_sha256 FROM deployments")
    stored = tmp_path / ".papayya" / "blobs" / row["source"]
    assert bundles.sha256_of(stored) == row["bundle_sha256"]
    assert stored.read_bytes() == GOOD
    events = await db_fetch(dsn, "SELECT event_type FROM events WHERE category = 'deployment'")
    assert [e["event_type"] for e in events] == ["DeploymentCreated"]
    status, again = await post_bundle(api_here, http, "hello-bot")
    assert status == 202 and again["version"] == 2


HOSTILE = {
    "dotdot": bundle_bytes(("agent.py", AGENT), ("../../escape.py", b"x")),
    "absolute": bundle_bytes(("agent.py", AGENT), ("/etc/cron.d/evil", b"x")),
    "link to /etc": bundle_bytes(("agent.py", AGENT), links={"passwd": "/etc/passwd"}),
    "not gzip": b"this is not a tarball",
    "gzip of junk": gzip.compress(b"junk" * 100),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_bundles_are_refused_and_nothing_is_stored(
    api_here: Api, http: Any, dsn: str, tmp_path: Path, case: str
) -> None:
    await create_agent(api_here, http, "hello-bot")
    status, body = await post_bundle(api_here, http, "hello-bot", HOSTILE[case])
    assert status == 400, body
    assert body["error"]["code"] == "invalid_bundle"
    await nothing_stored(dsn, tmp_path)


async def test_a_huge_member_is_refused(
    api_here: Api, http: Any, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy_routes, "LIMITS", bundles.Limits(member_bytes=1000))
    await create_agent(api_here, http, "hello-bot")
    content = bundle_bytes(("agent.py", AGENT), ("data.bin", b"\0" * 5000))
    status, body = await post_bundle(api_here, http, "hello-bot", content)
    assert status == 400 and "data.bin" in body["error"]["message"]
    await nothing_stored(dsn, tmp_path)


async def test_an_oversize_upload_answers_413(
    api_here: Api, http: Any, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy_routes, "LIMITS", bundles.Limits(bundle_bytes=100))
    await create_agent(api_here, http, "hello-bot")
    status, body = await post_bundle(api_here, http, "hello-bot")
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    await nothing_stored(dsn, tmp_path)


@pytest.mark.parametrize(
    ("fields", "content", "message"),
    [
        ({"entrypoint": "missing.py"}, GOOD, "not a file of the bundle"),
        ({"entrypoint": "/app/agent.py"}, GOOD, "relative path"),
        ({"entrypoint": "../agent.py"}, GOOD, "relative path"),
        ({"entrypoint": "not a module"}, GOOD, "dotted module name"),
        ({"runtime": "kubernetes"}, GOOD, "runtime"),
        ({"agent_function": "1bad"}, GOOD, "agent_function"),
        ({"colour": "blue"}, GOOD, "colour"),
        ({}, None, "'file' part"),
    ],
)
async def test_bad_input_answers_400_and_stores_nothing(
    api_here: Api,
    http: Any,
    dsn: str,
    tmp_path: Path,
    fields: dict[str, str],
    content: bytes | None,
    message: str,
) -> None:
    await create_agent(api_here, http, "hello-bot")
    status, body = await post_bundle(api_here, http, "hello-bot", content, **fields)
    assert status == 400, body
    assert message in body["error"]["message"]
    await nothing_stored(dsn, tmp_path)


async def test_a_json_body_is_not_a_bundle(api_here: Api, http: Any, dsn: str) -> None:
    await create_agent(api_here, http, "hello-bot")
    async with http.post(
        f"{api_here.url}/v1/agents/hello-bot/deploy", json={"file": "x"}, headers=api_here.headers()
    ) as resp:
        assert resp.status == 400
        assert "multipart/form-data" in (await resp.json())["error"]["message"]


async def test_deploy_needs_a_key_and_an_agent_of_the_callers_project(
    api_here: Api, http: Any, dsn: str, tmp_path: Path
) -> None:
    await create_agent(api_here, http, "hello-bot")
    _, other_key = await new_project(api_here, http)
    status, body = await post_bundle(api_here, http, "hello-bot", key="cpk_wrong")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await post_bundle(api_here, http, "hello-bot", key=other_key)
    assert status == 404, body
    status, body = await post_bundle(api_here, http, "no-such-agent")
    assert status == 404
    await nothing_stored(dsn, tmp_path)


async def test_a_process_deployment_is_unpacked_ready_and_runs(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http: Any
) -> None:
    async with running_cloud(dsn, monkeypatch, tmp_path) as cloud:
        status, _ = await cloud.call(
            "POST", "/v1/agents", {"name": "hi", "slug": "hi", "config": {}}
        )
        assert status == 201
        api = Api(cloud.url, cloud.key, cloud.app)
        status, body = await post_bundle(api, http, "hi", runtime="process")
        assert status == 202, body
        assert body["status"] == "ready" and body["runtime"] == "process"
        assert body["entrypoint"].endswith("/agent.py")
        run_id = await cloud.start("hi", input={"name": "Ada"})
        state = await cloud.wait(run_id, 60)
        assert state.status == "completed" and state.output == {"hello": "Ada"}
