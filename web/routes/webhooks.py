"""Webhooks: per-agent endpoints that start a run when called with a Standard Webhooks
signature (DESIGN §9).

The secret (``whsec_…``) is shown once, at creation and at rotation. It is stored as it is,
because checking an HMAC needs the key itself (API keys are only compared, so they are kept
hashed): whoever can read the database could sign webhook calls, not call the API.

``POST /v1/webhooks/{id}/trigger`` is authenticated by its signature, not an API key. Each
accepted ``webhook-id`` is recorded with its run, so a repeat (a sender's retry, or a
replay) answers 200 with the first request's run instead of starting another; the same
records over the last minute are the per-webhook rate limit (429). The run's id and
idempotency key derive from the webhook and the ``webhook-id``, so concurrent repeats
converge on one run too.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from aiohttp import web

from papayya.commands import queue
from papayya.commands.queue import RunOptions
from papayya.errors import InvalidInput, NotFound, RateLimited
from papayya.runs import run_stream
from papayya.signing import new_secret
from papayya.triggers.verify import verify
from sql import queries
from web import http, keys, tenancy
from web.openapi import api
from web.routes import agents

Q: Final = queries("triggers.sql")
# Below the event size limit (256 KiB), so that any accepted body fits in the run's event.
MAX_TRIGGER_BODY: Final = 200 * 1024
_RUN_NAMESPACE: Final = uuid.UUID("5c7e2b9a-3f1d-4a6e-b8c0-9d2e4f6a1b37")
_NO_NUL = r"^[^\x00]*$"
WebhookName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=4000, pattern=_NO_NUL)]
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
PAGE: Final = (("limit", "integer"), ("cursor", "string"))


class CreateWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A webhook that starts a run of the agent in the path; at most
    ``rate_limit_per_minute`` accepted calls in any minute."""

    name: WebhookName
    description: Description | None = None
    rate_limit_per_minute: PerMinute = 60


class WebhookOut(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    agent_id: str
    name: str
    description: str | None
    trigger_url: str
    rate_limit_per_minute: int
    created_at: datetime
    secret_rotated_at: datetime


class WebhookSecret(WebhookOut, kw_only=True):
    """The webhook with its signing secret, shown only here."""

    secret: str


class WebhookList(msgspec.Struct):
    data: list[WebhookOut]
    next_cursor: str | None


class Triggered(msgspec.Struct):
    run_id: str


def _ref(request: web.Request) -> str:
    """The path's id; one no row could have (control characters) answers 404 at once."""
    value = http.path_id(request)
    if not value.isprintable():
        raise NotFound(f"{value!r} not found")
    return value


def _out(request: web.Request, row: asyncpg.Record) -> dict[str, Any]:
    webhook_id = row["webhook_id"]
    return {
        "id": webhook_id,
        "project_id": row["project_id"],
        "agent_id": row["agent_id"],
        "name": row["name"],
        "description": row["description"],
        "trigger_url": f"{request.url.origin()}/v1/webhooks/{webhook_id}/trigger",
        "rate_limit_per_minute": row["rate_limit_per_minute"],
        "created_at": row["created_at"],
        "secret_rotated_at": row["secret_rotated_at"],
    }


def webhook_out(request: web.Request, row: asyncpg.Record) -> WebhookOut:
    return WebhookOut(**_out(request, row))


def webhook_secret(request: web.Request, row: asyncpg.Record) -> WebhookSecret:
    return WebhookSecret(**_out(request, row), secret=row["secret"])


@api.route(
    "POST", "/v1/agents/{id}/webhooks",
    "Create a webhook that starts runs of this agent; its secret is shown once",
    body=CreateWebhook, response=WebhookSecret, status=201, tag="webhooks",
)  # fmt: skip
async def create_webhook(request: web.Request) -> web.Response:
    ref = _ref(request)
    req = await http.body(request, CreateWebhook)
    project = http.project_id(request)
    pool = request.app[keys.STORE].pool
    agent = await agents.find(pool, project, ref)
    row = await pool.fetchrow(
        Q["insert_webhook"], project, tenancy.new_id("wh"), agent.id, req.name,
        req.description, new_secret(), req.rate_limit_per_minute, datetime.now(UTC),
    )  # fmt: skip
    assert row is not None  # INSERT … RETURNING
    return http.json(webhook_secret(request, row), 201)


@api.route(
    "GET", "/v1/agents/{id}/webhooks", "This agent's webhooks, newest first (no secrets)",
    response=WebhookList, query=PAGE, tag="webhooks",
)  # fmt: skip
async def list_webhooks(request: web.Request) -> web.Response:
    ref = _ref(request)
    project = http.project_id(request)
    pool = request.app[keys.STORE].pool
    limit = http.limit(request)
    after_time, after_id = agents.page_after(request)
    agent = await agents.find(pool, project, ref)
    rows = await pool.fetch(Q["list_webhooks"], project, agent.id, after_time, after_id, limit + 1)
    found = [webhook_out(request, r) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit:
        cursor = http.encode_cursor([found[-1].created_at.isoformat(), found[-1].id])
    return http.json(WebhookList(found, cursor))


@api.route(
    "DELETE", "/v1/webhooks/{id}", "Delete a webhook: its URL stops working at once",
    response=WebhookOut, tag="webhooks",
)  # fmt: skip
async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    pool = request.app[keys.STORE].pool
    row = await pool.fetchrow(Q["delete_webhook"], http.project_id(request), webhook_id)
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return http.json(webhook_out(request, row))


@api.route(
    "POST", "/v1/webhooks/{id}/rotate-secret",
    "A new signing secret, shown once; the old one stops working at once",
    response=WebhookSecret, tag="webhooks",
)  # fmt: skip
async def rotate_secret(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    pool = request.app[keys.STORE].pool
    row = await pool.fetchrow(
        Q["rotate_webhook_secret"], http.project_id(request), webhook_id, new_secret(),
        datetime.now(UTC),
    )  # fmt: skip
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return http.json(webhook_secret(request, row))


# -- the signed trigger ---------------------------------------------------------------------


def run_input(request: web.Request, body: bytes) -> Any:
    """A JSON body (by its content type) as JSON, anything else as UTF-8 text."""
    if not body:
        return None
    kind = request.content_type
    if kind == "application/json" or kind.endswith("+json"):
        return http.decode_json(body)
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("the body must be JSON or UTF-8 text") from None


def delivery_key(webhook_id: str, message_id: str) -> str:
    """The idempotency key of the run of one ``webhook-id``."""
    key = f"webhook:{webhook_id}:{message_id}"
    if len(key) > 255:
        key = f"webhook:{webhook_id}:sha256:{hashlib.sha256(message_id.encode()).hexdigest()}"
    return key


def delivery_run_id(webhook_id: str, message_id: str) -> str:
    return "run_" + uuid.uuid5(_RUN_NAMESPACE, delivery_key(webhook_id, message_id)).hex


async def _signed_body(request: web.Request) -> bytes:
    return await http.read_body(request, MAX_TRIGGER_BODY)


@api.route(
    "POST", "/v1/webhooks/{id}/trigger",
    "Start a run: the body (JSON or text) is its input. Authenticated by a Standard Webhooks "
    "signature (webhook-id, webhook-timestamp, webhook-signature), not an API key; a "
    "repeated webhook-id answers 200 with the first request's run",
    auth="signature", response=Triggered, status=202, tag="webhooks",
)  # fmt: skip
async def trigger_webhook(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    body = await _signed_body(request)
    store = request.app[keys.STORE]
    found = await store.pool.fetchrow(Q["webhook"], webhook_id)
    if found is None:
        raise NotFound(f"webhook {webhook_id} not found")
    message_id = verify(found["secret"], request.headers, body, time.time())
    key = delivery_key(webhook_id, message_id)
    options = RunOptions(input=run_input(request, body), idempotency_key=key)
    agent = await agents.find(store.pool, found["project_id"], found["agent_id"])
    queue.check_run(agent, options, "webhook")  # a bad body is refused before it counts
    run_id = delivery_run_id(webhook_id, message_id)
    async with store.pool.acquire() as conn, conn.transaction():
        # One request per webhook at a time here: the repeat check, the rate limit and the
        # delivery record cannot interleave. Nothing else is awaited while the lock is held.
        webhook = await conn.fetchrow(Q["lock_webhook"], webhook_id)
        if webhook is None:
            raise NotFound(f"webhook {webhook_id} not found")
        if webhook["secret"] != found["secret"]:  # rotated meanwhile
            verify(webhook["secret"], request.headers, body, time.time())
        first = await conn.fetchval(Q["delivery"], webhook_id, message_id)
        if first is None:
            limit = webhook["rate_limit_per_minute"]
            if await conn.fetchval(Q["recent_deliveries"], webhook_id) >= limit:
                raise RateLimited(f"webhook {webhook_id} accepts at most {limit} calls a minute")
            await conn.execute(Q["insert_delivery"], webhook_id, message_id, run_id)
    # Queued after the commit: queueing takes pool connections that requests waiting on the
    # lock could all be holding. If this process dies first, the delivery has no run yet;
    # the sender's retry finds the delivery and queues it (same id and key: idempotent).
    if first is not None and await store.summary(run_stream(first)) is not None:
        return http.json(Triggered(first), 200)
    state, _ = await queue.queue_run(
        request.app[keys.RUNS], queue.PostgresIdempotencyKeys(store.pool),
        functools.partial(agents.find, store.pool), found["project_id"], found["agent_id"], options,
        trigger="webhook", run_id=first or run_id,
        trigger_metadata={"papayya.webhook_id": webhook_id,
                          "papayya.webhook_message_id": message_id},
    )  # fmt: skip
    return http.json(Triggered(state.run_id), 202 if first is None else 200)
