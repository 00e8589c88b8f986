"""Fuzzing the webhook verifiers: any headers and body give the message id (only when signed
with the secret, within the tolerance) or ``InvalidSignature``, never another exception; for
Standard Webhooks and for every other scheme (bearer, GitHub, Stripe, Slack)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from papayya.errors import InvalidSignature
from papayya.signing import headers as signed_headers
from papayya.signing import new_secret
from papayya.triggers.schemes import SCHEMES, Delivery, verify_delivery
from papayya.triggers.verify import TOLERANCE_SECONDS, verify
from tests.support.webhooks import github_signed, slack_signed, stripe_signed

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = new_secret()
NOW = 1_800_000_000
# Header values as a server may hand them over: any text, lone surrogates included (aiohttp
# decodes header bytes that are not UTF-8 with surrogateescape).
anything = st.text(st.characters(codec=None, categories=None), max_size=60)
names = st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"])
stamps = st.integers(-(10**13), 10**13).map(str) | st.sampled_from(
    [str(NOW), f"{NOW}\n", f" {NOW}", f"+{NOW}", f"{NOW}.0", "٣٣٣", "1e9", "0" * 13]
)
header_sets = st.dictionaries(names, anything | stamps, max_size=3)


def refused_or_verified(headers: dict[str, str], body: bytes) -> str | None:
    try:
        return verify(SECRET, headers, body, NOW)
    except InvalidSignature:
        return None


@FUZZ
@given(header_sets, st.binary(max_size=100))
@example({"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "v1,\udcff"}, b"")
def test_arbitrary_headers_are_refused_cleanly(headers: dict[str, str], body: bytes) -> None:
    assert refused_or_verified(headers, body) is None


@FUZZ
@given(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=40),
    st.binary(max_size=100),
    st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS),
    st.data(),
)
def test_a_signed_message_verifies_and_any_change_is_refused(
    message_id: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    message_id = message_id.strip() or "m"
    if not message_id.isprintable():
        return
    headers = signed_headers(SECRET, message_id, body, now=NOW + skew)
    assert verify(SECRET, headers, body, NOW) == message_id
    # Another secret, body, id, timestamp or signature is refused.
    field = data.draw(st.sampled_from(["secret", "body", *headers]))
    if field == "secret":
        assert refused_or_verified_with(new_secret(), headers, body) is None
    elif field == "body":
        other = data.draw(st.binary(max_size=100).filter(lambda b: b != body))
        assert refused_or_verified(headers, other) is None
    else:
        value = data.draw(anything.filter(lambda v: v != headers[field]))
        changed = {**headers, field: value}
        if field == "webhook-signature" and headers[field] in value.split():
            return  # still carries the right signature among others: that is valid
        if field == "webhook-timestamp" and value.strip() == headers[field]:
            return
        assert refused_or_verified(changed, body) is None


def refused_or_verified_with(secret: str, headers: dict[str, str], body: bytes) -> str | None:
    try:
        return verify(secret, headers, body, NOW)
    except InvalidSignature:
        return None


# -- every scheme (papayya/triggers/schemes.py) ---------------------------------------------

SENDER_SECRET = "a-senders-secret-0123456789"
scheme_headers = st.sampled_from(
    ["Authorization", "Idempotency-Key", "X-Hub-Signature-256", "X-GitHub-Delivery",
     "X-GitHub-Event", "Stripe-Signature", "X-Slack-Signature", "X-Slack-Request-Timestamp"]
)  # fmt: skip
stripe_like = st.builds(
    lambda t, sigs: ",".join([f"t={t}", *(f"v1={s}" for s in sigs)]),
    stamps, st.lists(anything, max_size=3),
)  # fmt: skip
scheme_header_sets = st.dictionaries(scheme_headers, anything | stamps | stripe_like, max_size=5)


def delivered(scheme: str, headers: dict[str, str], body: bytes) -> Delivery | None:
    try:
        return verify_delivery(scheme, SENDER_SECRET, headers, body, NOW)
    except InvalidSignature:
        return None


@FUZZ
@given(st.sampled_from(SCHEMES), scheme_header_sets, st.binary(max_size=100))
@example("stripe", {"Stripe-Signature": "t=1800000000,v1=\udcff"}, b"")
@example("bearer", {"Authorization": "Bearer \udcff"}, b"")
def test_every_scheme_refuses_arbitrary_headers_cleanly(
    scheme: str, headers: dict[str, str], body: bytes
) -> None:
    assert delivered(scheme, headers, body) is None


def signed_as(scheme: str, body: bytes, skew: int) -> dict[str, str]:
    if scheme == "github":
        return github_signed(SENDER_SECRET, body, "d-1")
    if scheme == "stripe":
        return stripe_signed(SENDER_SECRET, body, NOW + skew)
    if scheme == "slack":
        return slack_signed(SENDER_SECRET, body, NOW + skew)
    return {"Authorization": f"Bearer {SENDER_SECRET}"}


@FUZZ
@given(
    st.sampled_from(["bearer", "github", "stripe", "slack"]),
    st.text(max_size=100).map(str.encode),  # Stripe's and Slack's SDKs sign text
    st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS),
    st.data(),
)
def test_each_senders_signature_verifies_and_a_change_is_refused(
    scheme: str, body: bytes, skew: int, data: st.DataObject
) -> None:
    headers = signed_as(scheme, body, skew)
    found = delivered(scheme, headers, body)
    assert found is not None and found.message_id
    if scheme == "bearer":  # the token is all there is: another one is refused
        token = data.draw(anything.filter(lambda v: v.strip() != SENDER_SECRET))
        assert delivered(scheme, {"Authorization": f"Bearer {token}"}, body) is None
        return
    other = data.draw(st.binary(max_size=100).filter(lambda b: b != body))
    assert delivered(scheme, headers, other) is None
    name = data.draw(st.sampled_from(sorted(headers)))
    if name in ("X-GitHub-Delivery", "X-GitHub-Event"):
        return  # not signed by GitHub: the delivery id is only the replay key
    value = data.draw(anything.filter(lambda v: v.strip() != headers[name].strip()))
    if name == "X-Slack-Request-Timestamp" and value.strip() == headers[name]:
        return
    assert delivered(scheme, {**headers, name: value}, body) is None
