"""Webhooks over HTTP: management with an API key, and the trigger endpoint signed with the
Standard Webhooks scheme (signatures made by the independent ``standardwebhooks`` package)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from typing import Any

from tests.support.api import Api, call, create_agent, new_project, page
from tests.support.db import db_fetch
from tests.support.webhooks import signed
from web.routes.webhooks import delivery_run_id


async def create_webhook(
    api: Api, http: Any, agent: str, key: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {"name": "github push", **fields}
    async with http.post(
        f"{api.url}/v1/agents/{agent}/webhooks", json=body, headers=api.headers(key)
    ) as resp:
        assert resp.status == 201, await resp.text()
        return dict(await resp.json())


async def trigger(
    http: Any,
    url: str,
    body: bytes,
    headers: dict[str, str],
    content_type: str = "application/json",
) -> tuple[int, Any]:
    payload = io.BytesIO(body)
    async with http.post(
        url, data=payload, headers={**headers, "Content-Type": content_type}
    ) as resp:
        return resp.status, await resp.json()


async def webhook_runs(dsn: str) -> list[Any]:
    return await db_fetch(
        dsn,
        "SELECT stream_id, data::text AS data FROM events WHERE event_type = 'RunQueued'"
        " AND data->>'trigger' = 'webhook'",
    )


async def test_create_list_rotate_delete(api: Api, http: Any, dsn: str) -> None:
    agent = await create_agent(api, http, "deployer")
    hook = await create_webhook(api, http, "deployer", description="on push")
    assert hook["id"].startswith("wh_") and hook["agent_id"] == agent["id"]
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["trigger_url"] == f"{api.url}/v1/webhooks/{hook['id']}/trigger"
    assert hook["description"] == "on push" and hook["rate_limit_per_minute"] == 60
    other = await create_webhook(api, http, agent["id"], name="second")
    status, listed = await call(api, http, "GET", "/v1/agents/deployer/webhooks")
    assert status == 200 and [w["id"] for w in listed] == [other["id"], hook["id"]]
    assert all("secret" not in w for w in listed)  # shown once
    first, more = await page(api, http, "/v1/agents/deployer/webhooks", limit=1)
    assert [w["id"] for w in first] == [other["id"]] and more

    status, rotated = await call(api, http, "POST", f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert status == 200 and rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != hook["secret"] and rotated["secret_rotated_at"] > hook["created_at"]
    body = b'{"ref": "main"}'
    status, _ = await trigger(http, hook["trigger_url"], body, signed(hook["secret"], body))
    assert status == 401  # the old secret stops working at once
    status, accepted = await trigger(
        http, hook["trigger_url"], body, signed(rotated["secret"], body)
    )
    assert status == 202, accepted

    status, deleted = await call(api, http, "DELETE", f"/v1/webhooks/{hook['id']}")
    assert status == 200 and deleted["id"] == hook["id"] and "secret" not in deleted
    status, error = await trigger(http, hook["trigger_url"], body, signed(rotated["secret"], body))
    assert status == 404 and error["error"]["code"] == "not_found"
    for method, path in [("DELETE", ""), ("POST", "/rotate-secret")]:
        status, _ = await call(api, http, method, f"/v1/webhooks/{hook['id']}{path}")
        assert status == 404
    status, listed = await call(api, http, "GET", "/v1/agents/deployer/webhooks")
    assert [w["id"] for w in listed] == [other["id"]]


async def test_a_signed_call_starts_a_run_with_the_body_as_input(
    api: Api, http: Any, dsn: str
) -> None:
    agent = await create_agent(api, http, "builder")
    hook = await create_webhook(api, http, "builder")
    body = json.dumps({"ref": "main", "commits": [1, 2]}).encode()
    status, answer = await trigger(http, hook["trigger_url"], body, signed(hook["secret"], body))
    assert status == 202 and set(answer) == {"run_id"}
    status, run = await call(api, http, "GET", f"/v1/runs/{answer['run_id']}")
    assert run["trigger"] == "webhook" and run["status"] == "queued"
    assert run["input"] == {"ref": "main", "commits": [1, 2]} and run["agent_id"] == agent["id"]
    # Text (any content type but JSON) is the input as a string; no body is no input.
    status, text = await trigger(
        http, hook["trigger_url"], b"deploy now", signed(hook["secret"], b"deploy now"),
        content_type="text/plain",
    )  # fmt: skip
    status, run = await call(api, http, "GET", f"/v1/runs/{text['run_id']}")
    assert run["input"] == "deploy now"
    status, empty = await trigger(
        http, hook["trigger_url"], b"", signed(hook["secret"], b""), content_type="text/plain"
    )
    status, run = await call(api, http, "GET", f"/v1/runs/{empty['run_id']}")
    assert status == 200 and run["input"] is None
    assert len(await webhook_runs(dsn)) == 3


async def test_a_repeated_webhook_id_answers_the_first_run(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "once")
    hook = await create_webhook(api, http, "once")
    body = b'{"n": 1}'
    headers = signed(hook["secret"], body, "msg_repeat")
    status, first = await trigger(http, hook["trigger_url"], body, headers)
    assert status == 202
    status, again = await trigger(http, hook["trigger_url"], body, headers)  # a replay
    assert status == 200 and again == first
    # A sender's retry re-signs the same id with a new timestamp: still the same run.
    retry = signed(hook["secret"], body, "msg_repeat", at=time.time() - 100)
    status, again = await trigger(http, hook["trigger_url"], body, retry)
    assert status == 200 and again == first
    # Concurrent deliveries of one new id converge on one run.
    headers = signed(hook["secret"], body, "msg_burst")
    answers = await asyncio.gather(
        *(trigger(http, hook["trigger_url"], body, headers) for _ in range(6))
    )
    assert sorted(s for s, _ in answers) == [200] * 5 + [202]
    assert len({a["run_id"] for _, a in answers}) == 1
    assert len(await webhook_runs(dsn)) == 2
    rows = await db_fetch(dsn, "SELECT message_id FROM webhook_deliveries ORDER BY 1")
    assert [r["message_id"] for r in rows] == ["msg_burst", "msg_repeat"]
    # A server that died between recording a delivery and queueing its run: the sender's
    # retry queues the run it names.
    lost = delivery_run_id(hook["id"], "msg_lost")
    await db_fetch(
        dsn, "INSERT INTO webhook_deliveries (webhook_id, message_id, run_id) VALUES ($1, $2, $3)",
        hook["id"], "msg_lost", lost,
    )  # fmt: skip
    status, answer = await trigger(
        http, hook["trigger_url"], body, signed(hook["secret"], body, "msg_lost")
    )
    assert status == 200 and answer == {"run_id": lost}
    status, run = await call(api, http, "GET", f"/v1/runs/{lost}")
    assert status == 200 and run["trigger"] == "webhook" and run["input"] == {"n": 1}


async def test_bad_signatures_are_401_and_write_nothing(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "guarded")
    hook = await create_webhook(api, http, "guarded")
    url, secret = hook["trigger_url"], hook["secret"]
    body = b'{"x": 1}'
    good = signed(secret, body)
    wrong = await create_webhook(api, http, "guarded", name="other")
    cases = [
        {},
        {k: v for k, v in good.items() if k != "webhook-signature"},
        {k: v for k, v in good.items() if k != "webhook-timestamp"},
        {k: v for k, v in good.items() if k != "webhook-id"},
        signed(wrong["secret"], body),  # another webhook's secret
        signed(secret, body, at=time.time() - 6 * 60),  # stale
        signed(secret, body, at=time.time() + 6 * 60),  # from the future
        signed(secret, b'{"x": 2}'),  # signed another body
        {**good, "webhook-id": "msg_other"},  # the signature covers the id
        {**good, "webhook-signature": "v1,not base64 at all"},
        {**good, "X-Api-Key": api.key, "webhook-signature": ""},  # an API key is no signature
    ]
    for headers in cases:
        status, error = await trigger(http, url, body, headers)
        assert status == 401, headers
        assert error["error"]["code"] in ("invalid_signature", "unauthorized"), error
    assert await webhook_runs(dsn) == []
    assert await db_fetch(dsn, "SELECT * FROM webhook_deliveries") == []
    status, error = await trigger(http, f"{api.url}/v1/webhooks/wh_missing/trigger", body, good)
    assert status == 404


async def test_size_limit_bad_json_and_rate_limit(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "limited")
    hook = await create_webhook(api, http, "limited", rate_limit_per_minute=2)
    url, secret = hook["trigger_url"], hook["secret"]
    for size in (200 * 1024 + 1, 2 * 1024 * 1024):
        big = b'"' + b"x" * size + b'"'
        status, error = await trigger(http, url, big, signed(secret, big))
        assert status == 413 and "error" in error
    bad = b'{"unclosed": '
    status, error = await trigger(http, url, bad, signed(secret, bad))
    assert status == 400 and "malformed JSON" in error["error"]["message"]
    binary = b"\xff\xfe"
    async with http.post(url, data=binary, headers=_raw_signed(secret, binary)) as resp:
        assert resp.status == 400
    nul = b'"a\\u0000b"'
    status, error = await trigger(http, url, nul, signed(secret, nul))
    assert status == 400
    assert await webhook_runs(dsn) == []

    first = signed(secret, b"{}")
    answers = [await trigger(http, url, b"{}", h) for h in (first, signed(secret, b"{}"))]
    assert [s for s, _ in answers] == [202, 202]
    status, error = await trigger(http, url, b"{}", signed(secret, b"{}"))
    assert status == 429 and error["error"]["code"] == "rate_limited"
    status, again = await trigger(http, url, b"{}", first)  # a repeat is not a new call
    assert status == 200 and again == answers[0][1]
    # Another webhook has its own limit.
    other = await create_webhook(api, http, "limited", name="other")
    status, _ = await trigger(http, other["trigger_url"], b"{}", signed(other["secret"], b"{}"))
    assert status == 202
    assert len(await webhook_runs(dsn)) == 3


def _raw_signed(secret: str, body: bytes) -> dict[str, str]:
    """Signed headers for a body that is not text (the package signs text only)."""
    from papayya.signing import headers

    return {**headers(secret, f"msg_{uuid.uuid4().hex}", body), "Content-Type": "text/plain"}


async def test_key_required_for_management(api: Api, http: Any) -> None:
    await create_agent(api, http, "locked")
    hook = await create_webhook(api, http, "locked")
    for method, path in [
        ("POST", "/v1/agents/locked/webhooks"),
        ("GET", "/v1/agents/locked/webhooks"),
        ("DELETE", f"/v1/webhooks/{hook['id']}"),
        ("POST", f"/v1/webhooks/{hook['id']}/rotate-secret"),
    ]:
        async with http.request(method, api.url + path, json={"name": "x"}) as resp:
            assert resp.status == 401, (method, path)
            assert (await resp.json())["error"]["code"] == "unauthorized"
    body = b"{}"
    status, _ = await trigger(http, hook["trigger_url"], body, signed(hook["secret"], body))
    assert status == 202  # the secret still works: nothing above changed it


async def test_other_projects_webhooks_are_not_found(api: Api, http: Any, dsn: str) -> None:
    _, other_key = await new_project(api, http)
    await create_agent(api, http, "mine")
    theirs_agent = await create_agent(api, http, "theirs", key=other_key)
    theirs = await create_webhook(api, http, "theirs", key=other_key)
    for method, path in [
        ("DELETE", f"/v1/webhooks/{theirs['id']}"),
        ("POST", f"/v1/webhooks/{theirs['id']}/rotate-secret"),
        ("POST", f"/v1/agents/{theirs_agent['id']}/webhooks"),
        ("POST", "/v1/agents/theirs/webhooks"),
        ("GET", f"/v1/agents/{theirs_agent['id']}/webhooks"),
    ]:
        status, error = await call(api, http, method, path, {"name": "stolen"})
        assert status == 404 and error["error"]["code"] == "not_found", (method, path)
    rows = await db_fetch(dsn, "SELECT webhook_id, secret FROM webhooks")
    assert [(r["webhook_id"], r["secret"]) for r in rows] == [(theirs["id"], theirs["secret"])]


async def test_bad_bodies_write_nothing(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "steady")
    h = {**api.headers(), "Content-Type": "application/json"}
    for raw, status in [
        (b"", 400),
        (b"{not json", 400),
        (b"[]", 400),
        (b"{}", 400),  # name is required
        (b'{"name": ""}', 400),
        (b'{"name": "n", "extra": 1}', 400),
        (b'{"name": "n", "secret": "whsec_mine"}', 400),
        (b'{"name": "a\\u0000b"}', 400),
        (b'{"name": "n", "rate_limit_per_minute": 0}', 400),
        (b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}', 413),
    ]:
        async with http.post(
            f"{api.url}/v1/agents/steady/webhooks", data=io.BytesIO(raw), headers=h
        ) as resp:
            assert resp.status == status, (raw[:60], await resp.text())
    assert await db_fetch(dsn, "SELECT * FROM webhooks") == []
    for path in ["/v1/webhooks/%00/rotate-secret", "/v1/agents/%00/webhooks"]:
        status, _ = await call(api, http, "POST", path, {"name": "n"})
        assert status == 404


async def test_openapi_describes_schedules_and_webhooks(api: Api, http: Any) -> None:
    async with http.get(f"{api.url}/openapi.json") as resp:
        spec = await resp.json()
    paths = spec["paths"]
    expected = {
        "/v1/agents/{id}/schedules": {"get", "post"},
        "/v1/schedules": {"get"},
        "/v1/schedules/{id}": {"get", "patch", "delete"},
        "/v1/schedules/{id}/fires": {"get"},
        "/v1/agents/{id}/webhooks": {"get", "post"},
        "/v1/webhooks/{id}": {"get", "patch", "delete"},
        "/v1/webhooks/{id}/rotate-secret": {"post"},
        "/v1/webhooks/{id}/trigger": {"post"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
    create = paths["/v1/agents/{id}/schedules"]["post"]
    assert create["security"] and {"201", "400", "401", "404"} <= set(create["responses"])
    schemas = spec["components"]["schemas"]
    for name in ("CreateSchedule", "PatchSchedule", "CreateWebhook"):
        assert schemas[name]["additionalProperties"] is False, name
    # The time zone is UTC unless sent, as in the hosted API.
    assert set(schemas["CreateSchedule"]["required"]) == {"cron_expression"}
    assert schemas["CreateSchedule"]["properties"]["timezone"]["default"] == "UTC"
    trigger = paths["/v1/webhooks/{id}/trigger"]["post"]
    assert "security" not in trigger  # the signature is the credential, not an API key
    assert {"200", "202", "401", "413", "429"} <= set(trigger["responses"])
    assert "secret" in schemas["WebhookSecret"]["properties"]
    assert "secret" not in schemas["WebhookOut"]["properties"]
