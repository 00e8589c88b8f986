"""Webhook schemes over HTTP (issue 16 §6, docs/webhooks.md): a webhook's ``scheme`` is set at
creation or by ``PATCH``, shown by get and list, and decides how its trigger is verified:
calls signed as GitHub, Stripe and Slack sign them (their SDKs where they have one) start a
run; repeats answer the first run; stale, unsigned or wrongly signed calls are 401 and start
nothing; Slack's challenge and GitHub's ping are answered without a run."""

from __future__ import annotations

import io
import json
import time
from typing import Any

from tests.support.api import Api, call, create_agent
from tests.support.db import db_fetch
from tests.support.webhooks import github_signed, signed, slack_signed, stripe_signed

STRIPE_SECRET = "whsec_stripe_made_this_one_0123456789"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


async def made(api: Api, http: Any, agent: str, **fields: Any) -> dict[str, Any]:
    status, hook = await call(api, http, "POST", f"/v1/agents/{agent}/webhooks",
                              {"name": "hook", **fields})  # fmt: skip
    assert status == 201, hook
    return dict(hook)


async def trigger(http: Any, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **headers}
    async with http.post(url, data=io.BytesIO(body), headers=headers) as resp:
        return resp.status, await resp.json()


async def runs(dsn: str) -> int:
    found = await db_fetch(
        dsn, "SELECT count(*) AS n FROM events WHERE event_type = 'RunQueued'"
        " AND data->>'trigger' = 'webhook'",
    )  # fmt: skip
    return int(found[0]["n"])


async def test_the_scheme_is_set_shown_and_changed(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "shown")
    plain = await made(api, http, "shown")
    assert plain["scheme"] == "standard" and plain["secret"].startswith("whsec_")
    hook = await made(api, http, "shown", scheme="stripe")
    assert hook["scheme"] == "stripe"
    status, got = await call(api, http, "GET", f"/v1/webhooks/{hook['id']}")
    assert status == 200 and got["scheme"] == "stripe" and "secret" not in got
    status, listed = await call(api, http, "GET", "/v1/agents/shown/webhooks")
    assert {w["id"]: w["scheme"] for w in listed} == {
        plain["id"]: "standard",
        hook["id"]: "stripe",
    }
    # Stripe makes its secrets: set it, never rotate it here.
    status, changed = await call(
        api, http, "PATCH", f"/v1/webhooks/{hook['id']}", {"secret": STRIPE_SECRET}
    )
    assert status == 200 and "secret" not in changed
    assert changed["secret_rotated_at"] > hook["secret_rotated_at"]
    status, error = await call(api, http, "POST", f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert status == 409 and "PATCH" in error["error"]["message"]
    rows = await db_fetch(dsn, "SELECT scheme, secret FROM webhooks WHERE webhook_id = $1",
                          hook["id"])  # fmt: skip
    assert [tuple(r) for r in rows] == [("stripe", STRIPE_SECRET)]
    status, renamed = await call(
        api, http, "PATCH", f"/v1/webhooks/{plain['id']}", {"scheme": "github", "name": "gh"}
    )
    assert status == 200 and (renamed["scheme"], renamed["name"]) == ("github", "gh")
    assert renamed["secret_rotated_at"] == plain["secret_rotated_at"]  # the secret kept


async def test_bad_schemes_and_secrets_are_400_and_change_nothing(
    api: Api, http: Any, dsn: str
) -> None:
    await create_agent(api, http, "strict")
    hook = await made(api, http, "strict", scheme="slack", secret=SLACK_SECRET)
    before = await db_fetch(dsn, "SELECT * FROM webhooks ORDER BY webhook_id")
    for body in (
        {"scheme": "gitlab"},
        {"scheme": "standard", "secret": "not-whsec"},
        {"scheme": "bearer", "secret": "short"},
        {"secret": ""},
        {"secret": "has space"},
        {"secret": "x" * 1001},
        {"scheme": None},
    ):
        status, error = await call(
            api, http, "POST", "/v1/agents/strict/webhooks", {"name": "bad", **body}
        )
        assert status == 400, (body, error)
        status, error = await call(api, http, "PATCH", f"/v1/webhooks/{hook['id']}", body)
        assert status == 400, (body, error)
    # Slack's secret is no whsec_: switching to standard needs a secret with it.
    status, error = await call(api, http, "PATCH", f"/v1/webhooks/{hook['id']}",
                               {"scheme": "standard"})  # fmt: skip
    assert status == 400 and "whsec_" in error["error"]["message"], error
    status, error = await call(api, http, "PATCH", f"/v1/webhooks/{hook['id']}", {"nope": 1})
    assert status == 400
    assert await db_fetch(dsn, "SELECT * FROM webhooks ORDER BY webhook_id") == before
    status, _ = await call(api, http, "PATCH", "/v1/webhooks/wh_missing", {"scheme": "github"})
    assert status == 404


async def test_github_pushes_start_runs_once_and_a_ping_starts_none(
    api: Api, http: Any, dsn: str
) -> None:
    await create_agent(api, http, "gh")
    hook = await made(api, http, "gh", scheme="github")
    url, secret = hook["trigger_url"], hook["secret"]
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    status, answer = await trigger(http, url, b"{}", github_signed(secret, b"{}", event="ping"))
    assert (status, answer) == (200, {"ok": True, "ping": "pong"})
    headers = github_signed(secret, body, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
    status, first = await trigger(http, url, body, headers)
    assert status == 202, first
    status, again = await trigger(http, url, body, headers)  # a redelivery
    assert (status, again) == (200, first)
    status, run = await call(api, http, "GET", f"/v1/runs/{first['run_id']}")
    assert run["input"] == {"ref": "refs/heads/main"} and run["trigger"] == "webhook"
    for bad in (
        github_signed("another secret", body),
        {**headers, "X-GitHub-Delivery": ""},
        {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"},
        signed(secret, body) if secret.startswith("whsec_") else {},  # another scheme's
    ):
        status, error = await trigger(http, url, body, bad)
        assert status == 401 and error["error"]["code"] == "invalid_signature", error
    status, _ = await trigger(http, url, body + b" ", github_signed(secret, body))
    assert status == 401
    assert await runs(dsn) == 1


async def test_stripe_events_start_one_run_each_within_the_tolerance(
    api: Api, http: Any, dsn: str
) -> None:
    await create_agent(api, http, "billing")
    hook = await made(api, http, "billing", scheme="stripe", secret=STRIPE_SECRET)
    url = hook["trigger_url"]
    body = json.dumps({"id": "evt_3MtwBwLkdIwHu7ix", "type": "invoice.paid"}).encode()
    status, first = await trigger(http, url, body, stripe_signed(STRIPE_SECRET, body))
    assert status == 202, first
    # Stripe retries an event with a new timestamp and signature: the same run.
    retried = stripe_signed(STRIPE_SECRET, body, time.time() - 60)
    assert await trigger(http, url, body, retried) == (200, first)
    for bad in (
        stripe_signed(STRIPE_SECRET, body, time.time() - 301),  # stale
        stripe_signed("whsec_another", body),
        {"Stripe-Signature": ""},
    ):
        status, error = await trigger(http, url, body, bad)
        assert status == 401 and error["error"]["code"] == "invalid_signature", error
    assert await runs(dsn) == 1


async def test_slack_is_verified_its_challenge_answered_and_retries_start_no_second_run(
    api: Api, http: Any, dsn: str
) -> None:
    await create_agent(api, http, "slackbot")
    hook = await made(api, http, "slackbot", scheme="slack", secret=SLACK_SECRET)
    url = hook["trigger_url"]
    challenge = json.dumps(
        {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
         "type": "url_verification"}
    ).encode()  # fmt: skip
    status, answer = await trigger(http, url, challenge, slack_signed(SLACK_SECRET, challenge))
    assert status == 200
    assert answer == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    status, _ = await trigger(http, url, challenge, slack_signed("another", challenge))
    assert status == 401
    assert await runs(dsn) == 0 and not await db_fetch(dsn, "SELECT * FROM webhook_deliveries")

    event = json.dumps(
        {"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {"type": "app_mention"}}
    ).encode()
    status, first = await trigger(http, url, event, slack_signed(SLACK_SECRET, event))
    assert status == 202, first
    retry = {**slack_signed(SLACK_SECRET, event, time.time() - 5), "X-Slack-Retry-Num": "1"}
    assert await trigger(http, url, event, retry) == (200, first)
    stale = slack_signed(SLACK_SECRET, event, time.time() - 301)
    status, error = await trigger(http, url, event, stale)
    assert status == 401 and "minutes" in error["error"]["message"]
    assert await runs(dsn) == 1


async def test_bearer_takes_the_webhook_token(api: Api, http: Any, dsn: str) -> None:
    await create_agent(api, http, "bearer")
    hook = await made(api, http, "bearer", scheme="bearer")
    url, token = hook["trigger_url"], hook["secret"]
    status, first = await trigger(http, url, b"{}", {"Authorization": f"Bearer {token}"})
    assert status == 202, first
    keyed = {"Authorization": f"Bearer {token}", "Idempotency-Key": "order-42"}
    status, second = await trigger(http, url, b"{}", keyed)
    assert status == 202 and second != first
    assert await trigger(http, url, b"{}", keyed) == (200, second)
    for bad in ({}, {"Authorization": f"Bearer {token}x"}, {"X-Api-Key": api.key}):
        status, error = await trigger(http, url, b"{}", bad)
        assert status == 401, error
    assert await runs(dsn) == 2


async def test_openapi_documents_the_schemes(api: Api, http: Any) -> None:
    async with http.get(f"{api.url}/openapi.json") as resp:
        spec = await resp.json()
    trigger_op = spec["paths"]["/v1/webhooks/{id}/trigger"]["post"]
    for word in ("X-Hub-Signature-256", "Stripe-Signature", "X-Slack-Signature", "Bearer"):
        assert word in trigger_op["summary"], word
    schemas = spec["components"]["schemas"]
    schemes = schemas["CreateWebhook"]["properties"]["scheme"]
    assert sorted(schemes["enum"]) == ["bearer", "github", "slack", "standard", "stripe"]
    assert schemes["default"] == "standard"
    assert "scheme" in schemas["WebhookOut"]["properties"]
    assert schemas["UpdateWebhook"]["additionalProperties"] is False
