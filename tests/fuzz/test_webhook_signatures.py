"""Fuzzing the Standard Webhooks verifier: any headers and body give the message id (only
when signed with the secret, within the tolerance) or ``InvalidSignature``, never another
exception."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from papayya.errors import InvalidSignature
from papayya.signing import headers as signed_headers
from papayya.signing import new_secret
from papayya.triggers.verify import TOLERANCE_SECONDS, verify

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
