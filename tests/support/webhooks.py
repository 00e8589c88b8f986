"""Standard Webhooks signatures, made by the independent ``standardwebhooks`` package so that
the tests check our verifier against someone else's signer."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

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
