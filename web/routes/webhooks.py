"""Webhooks: per-agent endpoints that start a run when called with a valid signature
(DESIGN §9), by the webhook's ``scheme``: Standard Webhooks (the default), a bearer token, or
the way GitHub, Stripe or Slack sign (``papayya.triggers.schemes``, docs/webhooks.md).

The secret (``whsec_…``, or one the sender gave, set at creation or by ``PATCH``) is shown
once, at creation and at rotation. It is stored as it is, because checking an HMAC needs the
key itself (API keys are only compared, so they are kept hashed): whoever can read the
database could sign webhook calls, not call the API.

``POST /v1/webhooks/{id}/trigger`` is authenticated by its signature, not an API key. Each
accepted call's replay key (``webhook-id``, ``X-GitHub-Delivery``, Stripe's event id…) is
recorded with its run, so a repeat (a sender's retry, or a replay) answers 200 with the first
request's run instead of starting another; the same records over the last minute are the
per-webhook rate limit (429). The run's id and idempotency key derive from the webhook and
the replay key, so concurrent repeats converge on one run too.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from aiohttp import web
from msgspec import UNSET, UnsetType

from papayya.commands import queue
from papayya.commands.queue import RunOptions
from papayya.errors import Conflict, InvalidInput, InvalidSignature, NotFound
from papayya.readmodels.projects import new_id
from papayya.readmodels.webhooks import Webhook
from papayya.runs import run_stream
from papayya.signing import new_secret, secret_key
from papayya.triggers.schemes import Scheme, verify_delivery
from web import http, keys
from web.openapi import api
from web.routes import agents

# Below the event size limit (256 KiB), so that any accepted body fits in the run's event.
MAX_TRIGGER_BODY: Final = 200 * 1024
_RUN_NAMESPACE: Final = uuid.UUID("5c7e2b9a-3f1d-4a6e-b8c0-9d2e4f6a1b37")
_NO_NUL = r"^[^\x00]*$"
WebhookName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=4000, pattern=_NO_NUL)]
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
# A sender's own secret (Stripe's whsec_…, Slack's signing secret, a GitHub secret, a token).
SenderSecret = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=r"^[!-~]+$")]
# A sender's secret we are given: long enough not to be guessed (Slack's are 32 hex digits,
# Stripe's longer); a Standard Webhooks key is 24 to 64 bytes (its specification).
MIN_SENDER_SECRET: Final = 16
STANDARD_KEY_BYTES: Final = (24, 64)
# Schemes whose sender makes the secret: ours would be of no use to them.
SENDER_MADE: Final = ("stripe", "slack")
PAGE: Final = (("limit", "integer"), ("cursor", "string"))


class CreateWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A webhook that starts a run of the agent in the path; at most
    ``rate_limit_per_minute`` accepted calls in any minute."""

    name: WebhookName
    description: Description | None = None
    rate_limit_per_minute: PerMinute = 60
    # How its sender signs (docs/webhooks.md); ``secret``: the sender's own (Stripe's and
    # Slack's are theirs to make), else one is made (``whsec_…``).
    scheme: Scheme = "standard"
    secret: SenderSecret | None = None


class UpdateWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Change what is given; a new ``secret`` replaces the old at once. A ``scheme`` whose
    secret the current one cannot be (``standard`` takes only ``whsec_<base64>``) needs a
    ``secret`` with it."""

    name: WebhookName | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    rate_limit_per_minute: PerMinute | UnsetType = UNSET
    scheme: Scheme | UnsetType = UNSET
    secret: SenderSecret | UnsetType = UNSET


class WebhookOut(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    agent_id: str
    name: str
    description: str | None
    scheme: str
    trigger_url: str
    rate_limit_per_minute: int
    created_at: datetime
    secret_rotated_at: datetime


class WebhookSecret(WebhookOut, kw_only=True):
    """The webhook with its signing secret, shown only here."""

    secret: str


class Triggered(msgspec.Struct):
    run_id: str


def _ref(request: web.Request) -> str:
    """The path's id; one no row could have (control characters) answers 404 at once."""
    value = http.path_id(request)
    if not value.isprintable():
        raise NotFound(f"{value!r} not found")
    return value


def _out(request: web.Request, hook: Webhook) -> dict[str, Any]:
    return {
        "id": hook.webhook_id,
        "project_id": hook.project_id,
        "agent_id": hook.agent_id,
        "name": hook.name,
        "description": hook.description,
        "scheme": hook.scheme,
        "trigger_url": f"{request.url.origin()}/v1/webhooks/{hook.webhook_id}/trigger",
        "rate_limit_per_minute": hook.rate_limit_per_minute,
        "created_at": hook.created_at,
        "secret_rotated_at": hook.secret_rotated_at,
    }


def webhook_out(request: web.Request, hook: Webhook) -> WebhookOut:
    return WebhookOut(**_out(request, hook))


def webhook_secret(request: web.Request, hook: Webhook) -> WebhookSecret:
    return WebhookSecret(**_out(request, hook), secret=hook.secret)


def check_secret(scheme: str, secret: str) -> str:
    """``secret`` if it can be the key of ``scheme``; ``InvalidInput`` saying why not."""
    if scheme == "standard":
        try:
            size = len(secret_key(secret))
        except ValueError:
            size = 0
        low, high = STANDARD_KEY_BYTES
        if not low <= size <= high:
            raise InvalidInput(
                f"a standard webhook's secret is whsec_ and {low} to {high} bytes in base64"
            )
    elif len(secret) < MIN_SENDER_SECRET:
        raise InvalidInput(f"a webhook secret has at least {MIN_SENDER_SECRET} characters")
    return secret


@api.route(
    "POST", "/v1/agents/{id}/webhooks",
    "Create a webhook that starts runs of this agent; its secret is shown once",
    body=CreateWebhook, response=WebhookSecret, status=201, tag="webhooks",
)  # fmt: skip
async def create_webhook(request: web.Request) -> web.Response:
    ref = _ref(request)
    req = await http.body(request, CreateWebhook)
    project = http.project_id(request)
    secret = check_secret(req.scheme, req.secret or new_secret())
    agent = await request.app[keys.AGENTS].find(project, ref)
    made = await request.app[keys.WEBHOOKS].create(
        project, new_id("wh"), agent.id, req.name, req.description, secret,
        req.rate_limit_per_minute, datetime.now(UTC), req.scheme,
    )  # fmt: skip
    return http.json(webhook_secret(request, made), 201)


@api.route(
    "GET", "/v1/agents/{id}/webhooks", "This agent's webhooks, newest first (no secrets)",
    response=list[WebhookOut], query=PAGE, tag="webhooks",
)  # fmt: skip
async def list_webhooks(request: web.Request) -> web.Response:
    ref = _ref(request)
    project = http.project_id(request)
    limit = http.limit(request)
    after_time, after_id = agents.page_after(request)
    agent = await request.app[keys.AGENTS].find(project, ref)
    page = await request.app[keys.WEBHOOKS].page(
        project, agent.id, (after_time, after_id), limit + 1
    )
    found = [webhook_out(request, w) for w in page[:limit]]
    cursor = None
    if len(page) > limit:
        cursor = http.encode_cursor([found[-1].created_at.isoformat(), found[-1].id])
    return http.page(request, found, cursor)


@api.route(
    "GET", "/v1/webhooks/{id}", "A webhook (no secret)", response=WebhookOut, tag="webhooks"
)  # fmt: skip
async def get_webhook(request: web.Request) -> web.Response:
    found = await request.app[keys.WEBHOOKS].get(http.project_id(request), _ref(request))
    return http.json(webhook_out(request, found))


@api.route(
    "PATCH", "/v1/webhooks/{id}",
    "Change a webhook's name, description, rate limit, scheme (standard, bearer, github, "
    "stripe, slack) or secret (the sender's own: Stripe's or Slack's signing secret); "
    "answers it without its secret",
    body=UpdateWebhook, response=WebhookOut, tag="webhooks",
)  # fmt: skip
async def update_webhook(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    req = await http.body(request, UpdateWebhook)
    now = datetime.now(UTC)

    def change(hook: Webhook) -> Webhook:
        fields = {k: v for k, v in msgspec.structs.asdict(req).items() if v is not UNSET}
        if "secret" in fields:
            fields["secret_rotated_at"] = now
        changed = msgspec.structs.replace(hook, **fields)
        check_secret(changed.scheme, changed.secret)
        return changed

    updated = await request.app[keys.WEBHOOKS].update(http.project_id(request), webhook_id, change)
    return http.json(webhook_out(request, updated))


@api.route(
    "DELETE", "/v1/webhooks/{id}", "Delete a webhook: its URL stops working at once",
    response=WebhookOut, tag="webhooks",
)  # fmt: skip
async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    gone = await request.app[keys.WEBHOOKS].delete(http.project_id(request), webhook_id)
    return http.json(webhook_out(request, gone))


@api.route(
    "POST", "/v1/webhooks/{id}/rotate-secret",
    "A new signing secret, shown once; the old one stops working at once",
    response=WebhookSecret, tag="webhooks",
)  # fmt: skip
async def rotate_secret(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    found = await request.app[keys.WEBHOOKS].get(http.project_id(request), webhook_id)
    if found.scheme in SENDER_MADE:
        raise Conflict(
            f"{found.scheme.capitalize()} makes its own signing secrets: set the new one with "
            f'PATCH /v1/webhooks/{webhook_id} {{"secret": …}}'
        )
    rotated = await request.app[keys.WEBHOOKS].rotate_secret(
        http.project_id(request), webhook_id, new_secret(), datetime.now(UTC)
    )
    return http.json(webhook_secret(request, rotated))


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
    "Start a run: the body (JSON or text) is its input. Authenticated by the webhook's "
    "scheme, not an API key: standard (Standard Webhooks: webhook-id, webhook-timestamp, "
    "webhook-signature, within 5 minutes), bearer (Authorization: Bearer <webhook secret>; "
    "Idempotency-Key, if sent, is the replay key), github (X-Hub-Signature-256: sha256=<hex "
    "HMAC of the body>; X-GitHub-Delivery is the replay key; a ping starts no run), stripe "
    "(Stripe-Signature: t=…,v1=<hex HMAC of \"t.body\">, within 300 s; the event id is the "
    "replay key), slack (X-Slack-Signature: v0=<hex HMAC of \"v0:ts:body\"> with "
    "X-Slack-Request-Timestamp, within 300 s; url_verification is answered with its "
    "challenge and starts no run). A repeated replay key answers 200 with the first "
    "request's run; a handshake answers 200 with the sender's expected body",
    auth="signature", response=Triggered, status=202, tag="webhooks",
)  # fmt: skip
async def trigger_webhook(request: web.Request) -> web.Response:
    webhook_id = _ref(request)
    body = await _signed_body(request)
    store = request.app[keys.STORE]
    webhooks = request.app[keys.WEBHOOKS]
    found = await webhooks.signed(webhook_id)
    delivery = verify_delivery(found.scheme, found.secret, request.headers, body, time.time())
    if delivery.answer is not None:  # a sender's handshake: no run
        return http.json(delivery.answer, 200)
    message_id = delivery.message_id
    key = delivery_key(webhook_id, message_id)
    options = RunOptions(input=run_input(request, body), idempotency_key=key)
    agent = await request.app[keys.AGENTS].find(found.project_id, found.agent_id)
    queue.check_run(agent, options, "webhook")  # a bad body is refused before it counts
    run_id = delivery_run_id(webhook_id, message_id)

    def still_signed(webhook: Webhook) -> None:
        if (webhook.scheme, webhook.secret) != (found.scheme, found.secret):  # changed meanwhile
            again = verify_delivery(webhook.scheme, webhook.secret, request.headers, body,
                                    time.time())  # fmt: skip
            if again.message_id != message_id:
                raise InvalidSignature("the webhook's scheme changed during this call")

    first = await webhooks.accept(webhook_id, message_id, run_id, still_signed)
    # Queued after the commit: queueing takes pool connections that requests waiting on the
    # lock could all be holding. If this process dies first, the delivery has no run yet;
    # the sender's retry finds the delivery and queues it (same id and key: idempotent).
    if first is not None and await store.summary(run_stream(first)) is not None:
        return http.json(Triggered(first), 200)
    state, _ = await queue.queue_run(
        request.app[keys.RUNS], request.app[keys.IDEMPOTENCY_KEYS],
        request.app[keys.AGENTS].find, found.project_id, found.agent_id, options,
        trigger="webhook", run_id=first or run_id,
        find_defaults=request.app[keys.PROJECTS].defaults,
        trigger_metadata={"papayya.webhook_id": webhook_id,
                          "papayya.webhook_message_id": message_id},
    )  # fmt: skip
    return http.json(Triggered(state.run_id), 202 if first is None else 200)
