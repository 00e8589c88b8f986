"""A revoked key keeps nothing open: revoking an API key, or signing out of the dashboard
(which revokes the key its login link made), ends every stream opened with that key within
1 s, in every server process, while streams of other keys go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import pytest

from papayya.apiclient import ApiClient
from papayya.errors import Unauthorized
from server.cli_api import follow
from tests.support.api import Api
from tests.support.serving import call, serving
from web import keys
from web.revocation import RECHECK_SECONDS
from web.routes import login

pytestmark = pytest.mark.timeout(120)

ENDED_WITHIN: float = 1.0


async def new_key(http: aiohttp.ClientSession, api: Api) -> tuple[str, str, str]:
    """``(project id, key id, key)`` of a new key of the bootstrap project."""
    _, projects = await call(http, api, "GET", "/v1/projects")
    project = projects[0]["id"]
    status, key = await call(http, api, "POST", f"/v1/projects/{project}/api-keys", {"name": "k"})
    assert status == 201, key
    return project, key["id"], key["key"]


async def durable_run(http: aiohttp.ClientSession, api: Api, run_id: str) -> str:
    status, doc = await call(
        http, api, "POST", "/v1/durable/runs", {"run_id": run_id, "agent": "a"}
    )
    assert status == 201, doc
    return str(doc["id"])


@asynccontextmanager
async def streams(
    http: aiohttp.ClientSession, url: str, key: str, run_id: str
) -> AsyncIterator[list[aiohttp.ClientResponse]]:
    """Both kinds of stream, opened with ``key`` (answered 200: the stream has started)."""
    async with AsyncExitStack() as stack:
        opened = []
        for path in (f"/v1/runs/{run_id}/events", "/v1/events?cursor=now"):
            response = await stack.enter_async_context(
                http.get(url + path, headers={"X-Api-Key": key})
            )
            assert response.status == 200, await response.text()
            opened.append(response)
        yield opened


async def ended(responses: list[aiohttp.ClientResponse], within: float) -> list[bytes]:
    """What each stream sent until it ended; fails if one is still open after ``within``."""
    started = time.monotonic()
    rest = await asyncio.wait_for(asyncio.gather(*(r.content.read() for r in responses)), within)
    assert time.monotonic() - started < within
    return rest


def says_revoked(rest: bytes) -> bool:
    return b"event: error" in rest and b"revoked" in rest


async def test_revoking_a_key_ends_its_streams_within_a_second(
    api: Api, http: aiohttp.ClientSession
) -> None:
    project, key_id, key = await new_key(http, api)
    run_id = await durable_run(http, api, "watched")
    async with (
        streams(http, api.url, key, run_id) as revoked,
        streams(http, api.url, api.key, run_id) as kept,
    ):
        status, body = await call(http, api, "DELETE", f"/v1/projects/{project}/api-keys/{key_id}")
        assert status == 200 and body["revoked_at"], body
        for rest in await ended(revoked, ENDED_WITHIN):
            assert says_revoked(rest), rest
        # The other key's streams go on: a new step still reaches them.
        status, _ = await call(
            http, api, "POST", "/v1/durable/runs/watched/checkpoints",
            {"label": "after", "duration_ms": 0},
        )  # fmt: skip
        assert status == 201
        for response in kept:
            line = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10)
            assert not says_revoked(line) and not response.content.at_eof(), line
    # And the revoked key opens nothing new.
    async with http.get(
        api.url + f"/v1/runs/{run_id}/events", headers={"X-Api-Key": key}
    ) as response:
        assert response.status == 401


async def test_signing_out_ends_the_dashboards_streams_within_a_second(
    api: Api, http: aiohttp.ClientSession
) -> None:
    link = await login.login_link(api.app[keys.STORE].pool, api.url)
    assert link is not None
    token = link.split("#token=", 1)[1]
    status, signed_in = await call(http, api, "POST", "/v1/dashboard/login", {"token": token})
    assert status == 201, signed_in
    key = signed_in["api_key"]
    run_id = await durable_run(http, api, "seen-from-the-dashboard")
    async with streams(http, api.url, key, run_id) as opened:
        # What the dashboard's "Sign out" does: revoke its own key with that key.
        path = f"/v1/projects/{signed_in['project_id']}/api-keys/{signed_in['key_id']}"
        status, body = await call(http, api, "DELETE", path, key=key)
        assert status == 200, body
        for rest in await ended(opened, ENDED_WITHIN):
            assert says_revoked(rest), rest


async def test_a_revocation_ends_the_streams_other_servers_hold(
    api: Api, http: aiohttp.ClientSession, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, key_id, key = await new_key(http, api)
    run_id = await durable_run(http, api, "elsewhere")
    async with serving(dsn, monkeypatch) as other, streams(http, other.url, key, run_id) as opened:
        status, _ = await call(http, api, "DELETE", f"/v1/projects/{project}/api-keys/{key_id}")
        assert status == 200
        for rest in await ended(opened, ENDED_WITHIN):
            assert says_revoked(rest), rest


async def test_a_revocation_whose_notice_was_lost_still_ends_the_streams(
    api: Api, http: aiohttp.ClientSession
) -> None:
    """The periodic re-check: a key revoked without a notification (written to the table
    directly, as if the notice was lost) ends its streams too."""
    _, key_id, key = await new_key(http, api)
    run_id = await durable_run(http, api, "unnoticed")
    async with streams(http, api.url, key, run_id) as opened:
        pool = api.app[keys.STORE].pool
        await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key_id)
        for rest in await ended(opened, RECHECK_SECONDS + ENDED_WITHIN):
            assert says_revoked(rest), rest


async def test_the_cli_following_a_run_stops_with_an_error_when_its_key_is_revoked(
    api: Api, http: aiohttp.ClientSession
) -> None:
    project, key_id, key = await new_key(http, api)
    run_id = await durable_run(http, api, "followed")
    async with ApiClient(api.url, key) as client:
        following = asyncio.create_task(follow(client, run_id))
        watch = api.app[keys.KEY_WATCH]
        deadline = time.monotonic() + 10
        while not watch.watching(key_id):  # the CLI's stream is open
            assert not following.done() and time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await call(http, api, "DELETE", f"/v1/projects/{project}/api-keys/{key_id}")
        with pytest.raises(Unauthorized, match="revoked"):
            await asyncio.wait_for(following, ENDED_WITHIN)
