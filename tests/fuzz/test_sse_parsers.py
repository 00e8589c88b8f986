"""Fuzzing the server-sent-events parsers: the gateway's ``SseSplitter`` (provider streams,
passed through byte for byte) and the API client's ``SseParser`` (``papayya runs logs -f``).
However a valid stream is cut into chunks, the same events come out; garbage never raises
anything but the documented error."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fakellm import sse as fake_sse
from papayya.apiclient import SseParser
from papayya.errors import PapayyaError
from papayya.metering.sse import SseEvent, SseSplitter
from web import sse as web_sse

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text as JSON may carry it: any character, line separators (U+2028, U+0085) included.
texts = st.text(st.characters(codec="utf-8"), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
names = st.none() | st.text(
    st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=12
).filter(lambda n: n.strip() == n)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def split_all(chunks: list[bytes]) -> list[SseEvent]:
    splitter = SseSplitter()
    events = [e for chunk in chunks for e in splitter.feed(chunk)]
    return events + splitter.flush()


def triples(events: list[SseEvent]) -> list[tuple[bytes, str | None, str]]:
    return [(e.raw, e.event, e.data) for e in events]


# -- the gateway's splitter ---------------------------------------------------------------------


@FUZZ
@given(
    st.lists(st.tuples(names, json_values), max_size=6),
    st.lists(st.integers(0, 10**6)),
    st.sampled_from([b"\n", b"\r\n"]),
)
@example([(None, "a\u2028b")], [], b"\n")  # U+2028 split the data line in two
@example([("x", {"k": "\x85"})], [], b"\r\n")  # so did U+0085 (NEL)
def test_splitter_reads_what_the_fake_provider_writes_in_any_chunks(
    events: list[tuple[str | None, Any]], cuts: list[int], newline: bytes
) -> None:
    stream = b"".join(fake_sse.encode(n, d) for n, d in events).replace(b"\n", newline)
    whole = split_all([stream])
    assert [(e.event, e.data) for e in whole] == [(n, _text(d)) for n, d in events]
    assert triples(split_all(chunked(stream, cuts))) == triples(whole)
    assert b"".join(e.raw for e in whole) == stream  # passed through byte for byte


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 10**6), max_size=8))
@example(b"data: " + b"[" * 100_000 + b"\n\n", [])  # json() used to raise RecursionError
def test_splitter_takes_any_bytes_and_loses_none(data: bytes, cuts: list[int]) -> None:
    events = split_all(chunked(data, cuts))
    joined = b"".join(e.raw for e in events)
    assert joined == data or (data.startswith(joined) and not data[len(joined) :].strip())
    for event in events:
        event.json()  # any data: a value or None, never an exception


def _text(value: Any) -> str:
    """The data of an event as the fake provider writes it (text as is, line breaks as LF)."""
    if isinstance(value, str):
        return re.sub(r"\r\n|\r", "\n", value)
    return msgspec.json.encode(value).decode()


def _plain(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value)) if not isinstance(value, str) else value


# -- the API client's parser --------------------------------------------------------------------


def parse_all(chunks: list[bytes]) -> list[tuple[str, str | None, Any]]:
    parser = SseParser()
    return [item for chunk in chunks for item in parser.feed(chunk)]


ids = (
    st.none()
    | st.integers(0, 10**9).map(str)
    | st.text(
        st.characters(codec="ascii", exclude_categories=("Cc",)), min_size=1, max_size=40
    ).filter(lambda i: i.strip() == i)
)


@FUZZ
@given(
    st.lists(st.tuples(names, ids, json_values), max_size=6),
    st.lists(st.integers(0, 10**6), max_size=10),
    st.booleans(),
)
def test_client_reads_what_the_api_writes_in_any_chunks(
    messages: list[tuple[str | None, str | None, Any]], cuts: list[int], comments: bool
) -> None:
    parts = []
    for name, event_id, data in messages:
        if comments:
            parts.append(b": keep-alive\n\n")
        parts.append(web_sse.message(msgspec.json.encode(data), event=name, id=event_id))
    stream = b"".join(parts)
    expected = [(n or "message", i, _plain(d)) for n, i, d in messages]
    assert parse_all([stream]) == expected
    assert parse_all(chunked(stream, cuts)) == expected


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 10**6), max_size=8))
@example(b"data: {not json\n\n", [])
@example(b"data: \xff\n\n", [])
@example(b"data: " + b"[" * 100_000 + b"\n\n", [])
def test_client_garbage_is_a_papayya_error_or_events(data: bytes, cuts: list[int]) -> None:
    try:
        parse_all(chunked(data, cuts))
    except PapayyaError as exc:
        assert "event stream" in str(exc)


def test_an_endless_line_is_refused_before_it_fills_memory() -> None:
    parser = SseParser()
    with pytest.raises(PapayyaError, match="event stream"):
        for _ in range(100):
            parser.feed(b"data: " + b"x" * (1 << 20))


def test_fake_provider_text_with_line_breaks_is_one_event() -> None:
    raw = fake_sse.encode("delta", "two\nlines")
    [event] = split_all([raw])
    assert (event.event, event.data) == ("delta", "two\nlines")
    assert json.loads(json.dumps(event.data)) == "two\nlines"
