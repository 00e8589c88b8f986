"""Fuzzing event decoding: whatever the input, ``decode_event``, ``decode_stored`` and
``decode_event_json`` give a valid event or raise ``InvalidEvent``, never anything else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from papayya.domain import events as ev
from papayya.errors import InvalidEvent
from tests.support.strategies import any_event

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AT = datetime(2026, 1, 1, tzinfo=UTC)
# Every character, lone surrogates included (a str from outside may hold one).
anything = st.characters(codec=None, categories=None)
texts = st.text(anything, max_size=30)
type_names = st.sampled_from(sorted(ev.EVENT_TYPES)) | texts
field_names = st.sampled_from(
    [*sorted({f for cls in ev.EVENT_CLASSES for f in cls.__struct_fields__}), "type", ""]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | texts
    | st.datetimes()
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(texts | field_names, inner, max_size=3)
    ),
    max_leaves=10,
)
datas = st.dictionaries(field_names | texts, values, max_size=8)
json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(texts | field_names, inner, max_size=3)
    ),
    max_leaves=10,
).map(json.dumps)


def encoded(event: ev.Event) -> bytes:
    return msgspec.json.encode(event)


@st.composite
def mutated_json(draw: st.DrawFn) -> bytes:
    """A valid event's JSON with a few bytes changed, cut or inserted."""
    raw = bytearray(encoded(draw(any_event)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip" and raw:
            raw[at] = draw(st.integers(0, 255))
        elif how == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


def valid_or_refused(decode: Any, *args: Any) -> None:
    try:
        event = decode(*args)
    except InvalidEvent:
        return
    assert isinstance(event, ev.Event) and type(event) in ev.EVENT_CLASSES


@FUZZ
@given(type_names, datas | values)
def test_decode_event(event_type: str, data: Any) -> None:
    valid_or_refused(ev.decode_event, event_type, data)


@FUZZ
@given(any_event)
def test_decode_event_with_each_field_replaced(event: ev.Event) -> None:
    """Every field of a real event, in turn, given a value of another kind."""
    name, data = ev.encode_event(event)
    for field in list(data):
        for value in (None, "", -1, 2**70, 1.5, [], {}, "\x00", "\ud800", {"type": name}):
            valid_or_refused(ev.decode_event, name, {**data, field: value})


@FUZZ
@given(type_names, st.binary(max_size=200) | mutated_json() | texts)
@example("RunStarted", b"{garbage")  # was a msgspec.DecodeError
@example("RunStarted", "\ud800")  # was a UnicodeEncodeError
@example("RunStarted", "[" * 100_000)
def test_decode_stored(event_type: str, data: bytes | str) -> None:
    valid_or_refused(ev.decode_stored, event_type, data, AT)


@FUZZ
@given(st.binary(max_size=200) | mutated_json() | texts | json_texts)
@example("\ud800")  # was a UnicodeEncodeError
@example("[" * 100_000)
@example(
    b'{"type": "RunQueued", "run_id": "r", "project_id": "p", "agent_id": "a", '
    b'"replayed_from": "x"}'
)
def test_decode_event_json(raw: bytes | str) -> None:
    valid_or_refused(ev.decode_event_json, raw)


@FUZZ
@given(any_event)
def test_every_valid_event_still_decodes_on_every_path(event: ev.Event) -> None:
    raw = encoded(event)
    name, data = ev.encode_event(event)
    assert ev.decode_event_json(raw) == event
    assert ev.decode_event(name, data) == event
    assert ev.decode_stored(name, msgspec.json.encode(data), AT) == msgspec.structs.replace(
        event, at=event.at or AT
    )
