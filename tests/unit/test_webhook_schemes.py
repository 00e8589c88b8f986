"""Each webhook scheme (papayya/triggers/schemes.py) accepts a call signed the way its sender
signs (the sender's SDK where it has one on PyPI, else its documentation's own example), and
refuses a wrong secret, a changed body, a stale timestamp or a missing header, saying why."""

from __future__ import annotations

import json
import time

import pytest
import stripe
from slack_sdk.signature import SignatureVerifier

from papayya.errors import InvalidSignature
from papayya.triggers.schemes import SCHEMES, verify_delivery
from tests.support.webhooks import github_signed, signed, slack_signed, stripe_signed


@pytest.fixture
def now() -> float:
    """The moment of the test: signatures made on the real clock are checked against it."""
    return time.time()


BODY = json.dumps({"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "type": "charge.succeeded"}).encode()


def refusal(scheme: str, secret: str, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verify_delivery(scheme, secret, headers, body, time.time())
    return str(caught.value)


def test_the_schemes_are_the_five_of_the_issue() -> None:
    assert SCHEMES == ("standard", "bearer", "github", "stripe", "slack")
    assert "unknown" in refusal("gitlab", "s", {})


def test_standard_is_standard_webhooks(now: float) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = signed(secret, BODY, "msg_1")
    assert verify_delivery("standard", secret, headers, BODY, now).message_id == "msg_1"


def test_githubs_documented_example_verifies(now: float) -> None:
    """GitHub's docs ("Validating webhook deliveries", "Testing the webhook payload
    validation") give this secret, payload and signature."""
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-1"}
    assert verify_delivery("github", secret, headers, body, now).message_id == "d-1"
    assert github_signed(secret, body)["X-Hub-Signature-256"] == signature  # our test signer


def test_github_refusals_and_ping(now: float) -> None:
    secret = "a-github-secret"
    headers = github_signed(secret, BODY, "delivery-7")
    found = verify_delivery("github", secret, headers, BODY, now)
    assert found.message_id == "delivery-7" and found.answer is None
    assert "does not match" in refusal("github", "another", headers)
    assert "does not match" in refusal("github", secret, headers, BODY + b" ")
    for missing in ("X-Hub-Signature-256", "X-GitHub-Delivery"):
        assert "missing" in refusal("github", secret, {**headers, missing: ""})
    ping = github_signed(secret, b"{}", "delivery-8", event="ping")
    assert verify_delivery("github", secret, ping, b"{}", now).answer == {
        "ok": True,
        "ping": "pong",
    }


def test_stripe_verifies_what_its_sdk_signs_within_its_tolerance(now: float) -> None:
    secret = "whsec_test_stripe_secret"
    headers = stripe_signed(secret, BODY, now - 299)
    found = verify_delivery("stripe", secret, headers, BODY, now)
    assert found.message_id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"  # Stripe's retries: one run
    # Stripe's own verifier (on the real clock) takes what its signer made for our tests.
    header = stripe_signed(secret, BODY)["Stripe-Signature"]
    assert stripe.WebhookSignature.verify_header(BODY, header, secret, 300)
    assert "minutes from now" in refusal("stripe", secret, stripe_signed(secret, BODY, now - 301))
    assert "minutes from now" in refusal("stripe", secret, stripe_signed(secret, BODY, now + 301))
    assert "no v1" in refusal("stripe", "whsec_other", headers)
    assert "no v1" in refusal("stripe", secret, headers, BODY.replace(b"charge", b"refund"))
    for header in ("", "t=1", "v1=ab", f"t={int(now)},t={int(now)},v1=ab"):
        assert "one t=" in refusal("stripe", secret, {"Stripe-Signature": header})
    # While Stripe rolls a secret it sends several v1: one that matches is enough.
    rolled = headers["Stripe-Signature"].replace("v1=", "v1=" + "0" * 64 + ",v1=")
    assert verify_delivery("stripe", secret, {"Stripe-Signature": rolled}, BODY, now)
    # A body without an event id: the timestamp and signature are the replay key.
    plain = stripe_signed(secret, b"[]", now)
    assert verify_delivery("stripe", secret, plain, b"[]", now).message_id.startswith("stripe:")


def test_slack_verifies_what_its_sdk_signs_and_answers_its_challenge(now: float) -> None:
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    body = json.dumps({"type": "event_callback", "event_id": "Ev0PV52K21"}).encode()
    headers = slack_signed(secret, body, now - 10)
    # Slack's own verifier (on the real clock) agrees with the signature our test makes.
    assert SignatureVerifier(secret).is_valid_request(body, slack_signed(secret, body))
    assert verify_delivery("slack", secret, headers, body, now).message_id == "Ev0PV52K21"
    assert "minutes from now" in refusal("slack", secret, slack_signed(secret, body, now - 301))
    assert "does not match" in refusal("slack", "another", headers, body)
    assert "does not match" in refusal("slack", secret, headers, body + b"\n")
    assert "missing" in refusal("slack", secret, {"X-Slack-Signature": "v0=00"}, body)
    challenge = json.dumps(
        {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": "3eZbrw1aBm2rZgRN",
         "type": "url_verification"}
    ).encode()  # fmt: skip
    found = verify_delivery("slack", secret, slack_signed(secret, challenge), challenge, now)
    assert found.answer == {"challenge": "3eZbrw1aBm2rZgRN"}
    # An unsigned challenge is refused like any other call.
    assert "does not match" in refusal(
        "slack", "another", slack_signed(secret, challenge), challenge
    )
    # A slash command (form-encoded, no event id): the timestamp and signature are the key.
    form = b"token=x&team_id=T1&command=%2Fweather&text=94070"
    key = verify_delivery("slack", secret, slack_signed(secret, form, now), form, now).message_id
    assert key.startswith(f"slack:{int(now)}:v0=")


def test_bearer_takes_the_token_and_an_idempotency_key(now: float) -> None:
    token = "pwt_0123456789abcdef0123"
    found = verify_delivery("bearer", token, {"Authorization": f"Bearer {token}"}, BODY, now)
    again = verify_delivery("bearer", token, {"Authorization": f"bearer {token}"}, BODY, now)
    assert found.message_id != again.message_id  # no key: each call is new
    keyed = {"Authorization": f"Bearer {token}", "Idempotency-Key": "order-42"}
    assert verify_delivery("bearer", token, keyed, BODY, now).message_id == "order-42"
    assert "not this webhook's" in refusal("bearer", token, {"Authorization": f"Bearer {token}x"})
    for header in ("", f"Basic {token}", "Bearer ", token):
        assert "missing" in refusal("bearer", token, {"Authorization": header})
    bad_key = {**keyed, "Idempotency-Key": "x" * 300}
    assert "printable" in refusal("bearer", token, bad_key)
