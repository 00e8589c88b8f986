"""Webhook calls signed as each sender signs them, by the sender's own SDK where it has one
on PyPI (``standardwebhooks``, ``stripe``, ``slack_sdk``), so that the tests check our
verifiers against someone else's signer."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime

import stripe
from slack_sdk.signature import SignatureVerifier
from standardwebhooks import Webhook


def signed(
    secret: str, body: bytes, message_id: str | None = None, at: float | None = None
) -> dict[str, str]:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body.decode()),
    }


# -- the other schemes, signed the way each sender does (docs/webhooks.md) ------------------


def github_signed(
    secret: str, body: bytes, delivery: str | None = None, event: str = "push"
) -> dict[str, str]:
    """As GitHub signs (its docs, "Validating webhook deliveries": the hex HMAC-SHA256 of the
    raw body keyed with the secret's UTF-8 bytes; there is no GitHub SDK on PyPI to do it).
    ``tests/unit/test_webhook_schemes.py`` holds it to the example in those docs."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Event": event,
    }


def stripe_signed(secret: str, body: bytes, at: float | None = None) -> dict[str, str]:
    """As Stripe signs: its own SDK's ``WebhookSignature.generate_signature_header``."""
    stamp = int(time.time() if at is None else at)
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, stamp)
    return {"Stripe-Signature": header}


def slack_signed(secret: str, body: bytes, at: float | None = None) -> dict[str, str]:
    """As Slack signs: its own SDK's ``SignatureVerifier.generate_signature``."""
    stamp = str(int(time.time() if at is None else at))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
