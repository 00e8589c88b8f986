"""Project secrets (issue 16 §3, docs/security.md): set, listed by name and deleted over the
API as the published SDK calls it, scoped to the caller's project; sealed at rest; given to
the project's agents (and no other's) in their environment, never to events or answers; and
re-sealed by ``papayya secrets rotate-key``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from papayya.readmodels.projectsecrets import MAX_VALUE_BYTES, ProjectSecrets
from papayya.secretbox import SecretBox, key_file, load_key, new_key, parse_key
from tests.support.cloud import Cloud, running_cloud
from web import keys

pytestmark = pytest.mark.timeout(120)

VALUE = "s3cr3t-value-of-project-one-" + "x" * 20
OTHER_VALUE = "s3cr3t-value-of-project-two-" + "y" * 20
# The agent tells what it found by hash and presence only, so that nothing it returns or
# prints can carry the value into events: any copy found there is the server's leak.
PEEK = """
import hashlib, os
from papayya import agent

# Read at import, as module-level code often does: the fork server preloads the agent's
# imports but runs its module in the run's own process, with the run's environment.
found = os.environ.get("API_TOKEN")

@agent
def peek(task):
    return {
        "api_token_sha256": found and hashlib.sha256(found.encode()).hexdigest(),
        "other_token": "OTHER_TOKEN" in os.environ,
        "server_key": any("SECRETS_KEY" in name for name in os.environ),
    }
"""


@pytest.fixture
async def cloud(dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(dsn, monkeypatch, tmp_path) as running:
        yield running


async def call(cloud: Cloud, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, cloud.url + path, json=body, headers={"X-Api-Key": key}) as r,
    ):
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


async def projects(cloud: Cloud) -> tuple[str, str, str]:
    """The cloud's project, and another with its own key: (first id, other id, other key)."""
    status, body = await cloud.call("GET", "/v1/projects")
    assert status == 200, body
    first = body[0]["id"]
    status, other = await cloud.call("POST", "/v1/projects", {"name": "other"})
    assert status == 201, other
    return first, other["id"], other["api_key"]["key"]


async def rows(cloud: Cloud) -> list[dict[str, Any]]:
    pool = cloud.app[keys.STORE].pool
    found = await pool.fetch("SELECT * FROM project_env_secrets ORDER BY project_id, name")
    return [dict(r) for r in found]


async def test_set_list_delete_are_scoped_to_the_callers_project(cloud: Cloud) -> None:
    first, other, other_key = await projects(cloud)
    base = f"/v1/projects/{first}/secrets"
    status, made = await cloud.call("POST", base, {"name": "API_TOKEN", "value": VALUE})
    assert status == 200 and made["name"] == "API_TOKEN" and "value" not in made, made
    status, made = await cloud.call("POST", base, {"name": "API_TOKEN", "value": VALUE + "2"})
    assert status == 200
    await cloud.call("POST", base, {"name": "B", "value": "b"})
    status, listed = await cloud.call("GET", base)
    assert status == 200 and [s["name"] for s in listed] == ["API_TOKEN", "B"]
    assert all(set(s) == {"name", "created_at", "updated_at"} for s in listed)
    assert listed[0]["updated_at"] >= listed[0]["created_at"]

    # Another project's key: sees nothing, sets nothing, deletes nothing.
    for method, path, body in (
        ("GET", base, None),
        ("POST", base, {"name": "X", "value": "x"}),
        ("DELETE", f"{base}/API_TOKEN", None),
    ):
        status, answer = await call(cloud, other_key, method, path, body)
        assert status == 404, (method, answer)
    assert await call(cloud, other_key, "GET", f"/v1/projects/{other}/secrets") == (200, [])
    assert [r["name"] for r in await rows(cloud)] == ["API_TOKEN", "B"]

    # At rest: sealed, not the value; the callback secret (project_secrets) still works.
    for row in await rows(cloud):
        assert VALUE.encode() not in bytes(row["sealed"]) and row["key_id"]
    status, callback = await cloud.call("GET", "/v1/callbacks/secret")
    assert status == 200 and callback["secret"].startswith("whsec_")

    status, gone = await cloud.call("DELETE", f"{base}/API_TOKEN")
    assert status == 200 and gone["name"] == "API_TOKEN" and "value" not in gone
    status, answer = await cloud.call("DELETE", f"{base}/API_TOKEN")
    assert status == 404, answer
    status, listed = await cloud.call("GET", base)
    assert [s["name"] for s in listed] == ["B"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "value": "v"},
        {"name": "A=B", "value": "v"},
        {"name": "A\x00B", "value": "v"},
        {"name": "A\nB", "value": "v"},
        {"name": "PAPAYYA_RUN_TOKEN", "value": "v"},
        {"name": "A" * 257, "value": "v"},
        {"name": "A", "value": "v" * (MAX_VALUE_BYTES + 1)},
        {"name": "A", "value": "v\x00"},
        {"name": "A"},
        {"name": "A", "value": 3},
        {"name": "A", "value": "v", "extra": 1},
    ],
)
async def test_bad_input_is_refused_and_writes_nothing(cloud: Cloud, body: dict[str, Any]) -> None:
    first, _, _ = await projects(cloud)
    status, answer = await cloud.call("POST", f"/v1/projects/{first}/secrets", body)
    assert status == 400, answer
    assert "error" in answer
    assert await rows(cloud) == []


async def test_an_agent_sees_its_projects_secrets_and_no_value_reaches_events_or_logs(
    cloud: Cloud, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    first, other, other_key = await projects(cloud)
    await cloud.call("POST", f"/v1/projects/{first}/secrets", {"name": "API_TOKEN", "value": VALUE})
    status, _ = await call(
        cloud, other_key, "POST", f"/v1/projects/{other}/secrets",
        {"name": "OTHER_TOKEN", "value": OTHER_VALUE},
    )  # fmt: skip
    assert status == 200
    await cloud.register("peek", PEEK)
    run_id = await cloud.start("peek")
    run = await cloud.wait(run_id)
    assert run.status == "completed", (run.error_code, run.error_message)
    assert run.output == {
        "api_token_sha256": hashlib.sha256(VALUE.encode()).hexdigest(),
        "other_token": False,
        "server_key": False,
    }

    pool = cloud.app[keys.STORE].pool
    events = [r["row"] for r in await pool.fetch("SELECT e::text AS row FROM events e")]
    payloads = [bytes(r["content"]) for r in await pool.fetch("SELECT content FROM payloads")]
    answers = [json.dumps((await cloud.call("GET", f"/v1/runs/{run_id}{s}"))[1])
               for s in ("", "/steps", "/state")]  # fmt: skip
    assert events and len(answers) == 3
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert len(logged) > 3  # the scan did see the server's logs
    out, err = capfd.readouterr()
    for secret in (VALUE, OTHER_VALUE):
        assert not any(secret in text for text in events + answers + logged + [out, err])
        assert not any(secret.encode() in content for content in payloads)


async def rotate(cloud: Cloud, *args: str, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "secrets", "rotate-key", *args,
        env={**cloud.worker_env(), "PAPAYYA_DATA_DIR": str(cloud.config.data_dir), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_rotating_the_key_reseals_every_value_in_one_go(cloud: Cloud) -> None:
    first, other, other_key = await projects(cloud)
    await cloud.call("POST", f"/v1/projects/{first}/secrets", {"name": "API_TOKEN", "value": VALUE})
    await call(cloud, other_key, "POST", f"/v1/projects/{other}/secrets",
               {"name": "OTHER_TOKEN", "value": OTHER_VALUE})  # fmt: skip
    before = await rows(cloud)
    old_key = key_file(cloud.config.data_dir).read_text().strip()

    # A wrong old key: refused, nothing changed.
    code, out = await rotate(cloud, "--old-key", new_key(), "--new-key", new_key())
    assert code != 0 and "nothing was changed" in out, out
    assert await rows(cloud) == before

    fresh = new_key()
    code, out = await rotate(cloud, "--new-key", fresh)
    assert code == 0 and "re-sealed 2" in out, out
    after = await rows(cloud)
    assert [r["sealed"] for r in after] != [r["sealed"] for r in before]
    assert {r["key_id"] for r in after} == {SecretBox(parse_key(fresh)).key_id}
    # The data directory's key file now holds the new key (still 0600).
    path = key_file(cloud.config.data_dir)
    assert path.read_text().strip() == fresh and path.stat().st_mode & 0o777 == 0o600
    store = cloud.app[keys.STORE]
    opened = ProjectSecrets(store, SecretBox(load_key(None, cloud.config.data_dir)))
    assert await opened.environment(first) == {"API_TOKEN": VALUE}
    assert await opened.environment(other) == {"OTHER_TOKEN": OTHER_VALUE}
    # The old key opens none of them any more, and says why.
    stale = ProjectSecrets(store, SecretBox(parse_key(old_key)))
    with pytest.raises(Exception, match="another secrets key"):
        await stale.environment(first)
    # Run again (after a crash, say): nothing left to re-seal.
    code, out = await rotate(cloud, "--old-key", old_key, "--new-key", fresh)
    assert code == 0 and "re-sealed 0" in out, out


async def test_a_worker_elsewhere_needs_the_same_key(
    dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A ``papayya worker`` with a data directory of its own (another machine) has another
    key: the run fails saying so, and shows no value. Given ``PAPAYYA_SECRETS_KEY`` (the
    API's key), its agents get the secret."""
    async with running_cloud(dsn, monkeypatch, tmp_path, worker=False, max_attempts=1) as cloud:
        first, _, _ = await projects(cloud)
        path = f"/v1/projects/{first}/secrets"
        await cloud.call("POST", path, {"name": "API_TOKEN", "value": VALUE})
        await cloud.register("peek", PEEK)
        worker = await cloud.spawn_worker()
        run = await cloud.wait(await cloud.start("peek"))
        assert run.status == "failed" and run.error_code == "runtime_error", run.error_code
        assert "another secrets key" in (run.error_message or "") and "API_TOKEN" in (
            run.error_message or ""
        )
        assert VALUE not in (run.error_message or "")
        worker.kill()
        await worker.wait()
        key = key_file(cloud.config.data_dir).read_text().strip()
        await cloud.spawn_worker(PAPAYYA_SECRETS_KEY=key)
        run = await cloud.wait(await cloud.start("peek"))
        assert run.status == "completed", (run.error_code, run.error_message)
        assert run.output["api_token_sha256"] == hashlib.sha256(VALUE.encode()).hexdigest()
        assert run.output["server_key"] is False  # the worker's key never reaches its agents
