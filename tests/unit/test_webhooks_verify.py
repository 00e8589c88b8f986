"""Standard Webhooks signatures: vectors from the independent ``standardwebhooks`` package,
wrong secrets, stale and future timestamps, tampering."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from papayya.errors import InvalidSignature
from papayya.signing import new_secret, sign
from papayya.triggers.verify import TOLERANCE_SECONDS, verify

NOW = 1_714_564_800  # 2024-05-01T12:00:00Z
# The example of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def their_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    signature = Webhook(secret).sign(
        message_id, datetime.fromtimestamp(timestamp, UTC), body.decode()
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_the_specifications_example() -> None:
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    assert verify(SPEC_SECRET, headers, SPEC_BODY, SPEC_TIMESTAMP + 10) == SPEC_ID
    assert sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60),
    st.text(max_size=300),
    st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS),
)
def test_their_signatures_verify_and_ours_verify_with_them(
    message_id: str, body_text: str, skew: int
) -> None:
    secret = new_secret()
    body = body_text.encode()
    headers = their_headers(secret, message_id, NOW + skew, body)
    assert verify(secret, headers, body, NOW) == message_id
    # And the other way: our signature passes their verification (at the real time).
    now = int(time.time())
    ours = {
        "webhook-id": message_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, message_id, now, body),
    }
    Webhook(secret).verify(body, ours, json_parse=False)


def test_a_signature_among_several_is_enough() -> None:
    secret, old = new_secret(), new_secret()
    headers = their_headers(secret, "msg_1", NOW, b"{}")
    stale = their_headers(old, "msg_1", NOW, b"{}")["webhook-signature"]
    headers["webhook-signature"] = f"v1a,xyz {stale} {headers['webhook-signature']}"
    assert verify(secret, headers, b"{}", NOW) == "msg_1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-id": ""}, "missing"),
        ({"webhook-timestamp": ""}, "missing"),
        ({"webhook-signature": ""}, "missing"),
        ({"webhook-timestamp": str(NOW - TOLERANCE_SECONDS - 1)}, "more than 5 minutes"),
        ({"webhook-timestamp": str(NOW + TOLERANCE_SECONDS + 1)}, "more than 5 minutes"),
        ({"webhook-timestamp": "1714564800.5"}, "whole seconds"),
        ({"webhook-timestamp": "-5"}, "whole seconds"),
        ({"webhook-id": "x" * 256}, "at most 255"),
        ({"webhook-id": "msg\n1"}, "printable"),
        ({"webhook-id": "msg_2"}, "no webhook-signature matches"),  # signed for another id
        ({"webhook-signature": "v1,AAAA"}, "no webhook-signature matches"),
        ({"webhook-signature": "v2,abc"}, "no webhook-signature matches"),
    ],
)
def test_refusals_say_why(change: dict[str, str], reason: str) -> None:
    secret = new_secret()
    headers = {**their_headers(secret, "msg_1", NOW, b'{"a": 1}'), **change}
    with pytest.raises(InvalidSignature, match=reason):
        verify(secret, headers, b'{"a": 1}', NOW)


def test_wrong_secret_and_tampered_body_are_refused() -> None:
    secret = new_secret()
    headers = their_headers(secret, "msg_1", NOW, b'{"a": 1}')
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verify(new_secret(), headers, b'{"a": 1}', NOW)
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verify(secret, headers, b'{"a": 2}', NOW)
    # A timestamp moved into the window without re-signing breaks the signature.
    moved = {**headers, "webhook-timestamp": str(NOW + 1)}
    with pytest.raises(InvalidSignature, match="no webhook-signature matches"):
        verify(secret, moved, b'{"a": 1}', NOW)


def test_invalid_signature_is_a_401() -> None:
    assert InvalidSignature.http_status == 401
