"""Verifying Standard Webhooks signatures (https://www.standardwebhooks.com). Pure.

A request carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: one or more space-separated ``v1,<base64 HMAC-SHA256>`` (a sender
rotating its secret may sign with both). Signing itself is ``papayya.signing``, shared with
the run callbacks.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from typing import Final

from papayya.errors import InvalidSignature
from papayya.signing import sign

TOLERANCE_SECONDS: Final = 5 * 60
MAX_ID_LENGTH: Final = 255
_TIMESTAMP: Final = re.compile(r"^[0-9]{1,12}$")


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """The request's ``webhook-id`` if it is signed with ``secret`` (``whsec_…``) within
    the tolerance of ``now`` (Unix seconds); ``InvalidSignature`` saying why otherwise."""
    message_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (message_id and stamp and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(message_id) > MAX_ID_LENGTH or not message_id.isprintable():
        raise InvalidSignature(f"webhook-id must be at most {MAX_ID_LENGTH} printable characters")
    if not _TIMESTAMP.match(stamp):
        raise InvalidSignature("webhook-timestamp must be Unix time in whole seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise InvalidSignature(
            f"webhook-timestamp is more than {TOLERANCE_SECONDS // 60} minutes from now"
        )
    expected = sign(secret, message_id, timestamp, body).encode()
    for candidate in signatures.split():
        # Compared as text ("v1,<base64>"), so nothing the sender sent is decoded; a header
        # that was not UTF-8 holds lone surrogates, which "surrogatepass" encodes all the same.
        if hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), expected):
            return message_id
    raise InvalidSignature("no webhook-signature matches this webhook's secret")
