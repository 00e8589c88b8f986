"""How each kind of sender authenticates a webhook call (issue 16 §6, docs/webhooks.md). Pure.

A webhook has one ``scheme``; its ``secret`` is the key (or token) of that scheme:

- ``standard``: Standard Webhooks (``papayya.triggers.verify``), ``whsec_<base64>``.
- ``bearer``: ``Authorization: Bearer <secret>``. No timestamp to check: a bearer token is a
  password, so whoever saw one request can make new ones anyway. An ``Idempotency-Key`` (or
  ``webhook-id``) header, when sent, is the replay key; without one each call is new.
- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`` keyed with the
  secret's UTF-8 bytes; ``X-GitHub-Delivery`` is the replay key (GitHub sends no timestamp).
  GitHub's ``ping`` (sent when the hook is made) is answered without a run.
- ``stripe``: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (several
  ``v1`` while Stripe rolls a secret), within 300 s; the event's ``id`` is the replay key, so
  Stripe's retries of one event (new ``t``, new signature) start one run.
- ``slack``: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<ts>:<body>">`` with
  ``X-Slack-Request-Timestamp`` within 300 s; the ``event_id`` is the replay key (else the
  timestamp and signature). Slack's ``url_verification`` is answered with its ``challenge``
  and starts no run.

Every comparison is ``hmac.compare_digest`` over bytes (text headers encoded with
``surrogatepass``, so that nothing a sender sent needs decoding); any refusal is
``InvalidSignature`` (401) saying why.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from papayya.errors import InvalidSignature
from papayya.triggers.verify import MAX_ID_LENGTH, TOLERANCE_SECONDS, verify

Scheme = Literal["standard", "bearer", "github", "stripe", "slack"]
SCHEMES: Final[tuple[str, ...]] = get_args(Scheme)
_STAMP: Final = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Delivery:
    """A verified call: its replay key, and for a sender's handshake (Slack's challenge,
    GitHub's ping) the answer to give instead of starting a run."""

    message_id: str
    answer: dict[str, Any] | None = None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _replay_key(value: str, header: str) -> str:
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidSignature(f"{header} must be at most {MAX_ID_LENGTH} printable characters")
    return value


def _fresh(stamp: str, header: str, now: float) -> int:
    if not _STAMP.match(stamp):
        raise InvalidSignature(f"{header} must be Unix time in whole seconds")
    if abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise InvalidSignature(f"{header} is more than {TOLERANCE_SECONDS // 60} minutes from now")
    return int(stamp)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


def _bearer(secret: str, headers: Mapping[str, str]) -> Delivery:
    kind, _, token = headers.get("Authorization", "").partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise InvalidSignature("missing Authorization: Bearer <webhook token>")
    if not hmac.compare_digest(_bytes(token.strip()), secret.encode()):
        raise InvalidSignature("the bearer token is not this webhook's")
    key = headers.get("Idempotency-Key") or headers.get("webhook-id")
    if key:
        return Delivery(_replay_key(key, "Idempotency-Key"))
    return Delivery(f"bearer:{secrets.token_hex(16)}")  # nothing to tell a repeat by


def _github(secret: str, headers: Mapping[str, str], body: bytes) -> Delivery:
    signature = headers.get("X-Hub-Signature-256", "")
    delivery = headers.get("X-GitHub-Delivery", "")
    if not (signature and delivery):
        raise InvalidSignature("missing X-Hub-Signature-256 or X-GitHub-Delivery header")
    expected = "sha256=" + _hex_hmac(secret, body)
    if not hmac.compare_digest(_bytes(signature.strip()), expected.encode()):
        raise InvalidSignature("X-Hub-Signature-256 does not match this webhook's secret")
    key = _replay_key(delivery, "X-GitHub-Delivery")
    if headers.get("X-GitHub-Event") == "ping":
        return Delivery(key, {"ok": True, "ping": "pong"})
    return Delivery(key)


def _stripe(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> Delivery:
    pairs = [item.partition("=") for item in headers.get("Stripe-Signature", "").split(",")]
    stamps = [value.strip() for name, _, value in pairs if name.strip() == "t"]
    candidates = [value.strip() for name, _, value in pairs if name.strip() == "v1"]
    if len(stamps) != 1 or not candidates:
        raise InvalidSignature("Stripe-Signature must hold one t= and at least one v1=")
    stamp = _fresh(stamps[0], "Stripe-Signature's t", now)
    expected = _hex_hmac(secret, f"{stamp}.".encode() + body).encode()
    matched = [c for c in candidates if hmac.compare_digest(_bytes(c), expected)]
    if not matched:
        raise InvalidSignature("no v1 signature of Stripe-Signature matches this webhook's secret")
    event = _json_object(body).get("id")
    if isinstance(event, str) and event:
        return Delivery(_replay_key(event, "the event's id"))
    return Delivery(f"stripe:{stamp}:{matched[0]}")


def _slack(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> Delivery:
    signature = headers.get("X-Slack-Signature", "")
    stamp = headers.get("X-Slack-Request-Timestamp", "")
    if not (signature and stamp):
        raise InvalidSignature("missing X-Slack-Signature or X-Slack-Request-Timestamp header")
    _fresh(stamp, "X-Slack-Request-Timestamp", now)
    expected = "v0=" + _hex_hmac(secret, f"v0:{stamp}:".encode() + body)
    if not hmac.compare_digest(_bytes(signature.strip()), expected.encode()):
        raise InvalidSignature("X-Slack-Signature does not match this webhook's secret")
    payload = _json_object(body)
    if payload.get("type") == "url_verification":
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise InvalidSignature("a url_verification without a challenge")
        return Delivery(f"slack-challenge:{stamp}", {"challenge": challenge})
    event = payload.get("event_id")
    if isinstance(event, str) and event:
        return Delivery(_replay_key(event, "the event_id"))
    return Delivery(f"slack:{stamp}:{signature.strip()[:80]}")


def verify_delivery(
    scheme: str, secret: str, headers: Mapping[str, str], body: bytes, now: float
) -> Delivery:
    """The verified call, by the webhook's scheme; ``InvalidSignature`` saying why not."""
    if scheme == "standard":
        return Delivery(verify(secret, headers, body, now))
    if scheme == "bearer":
        return _bearer(secret, headers)
    if scheme == "github":
        return _github(secret, headers, body)
    if scheme == "stripe":
        return _stripe(secret, headers, body, now)
    if scheme == "slack":
        return _slack(secret, headers, body, now)
    raise InvalidSignature(f"unknown webhook scheme {scheme!r}")
