"""Domain events: the store mapping round-trips every type; bad input gives InvalidEvent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given

from eventstore.types import NewEvent, RecordedEvent
from papayya.domain import events as ev
from papayya.errors import InvalidEvent, InvalidInput
from tests.support.strategies import any_event, events_of, queued


@pytest.mark.parametrize("cls", ev.EVENT_CLASSES, ids=lambda c: c.__name__)
def test_every_event_type_is_registered_under_its_tag(cls: type[ev.Event]) -> None:
    assert ev.EVENT_TYPES[cls.__name__] is cls
    assert cls.__struct_config__.tag == cls.__name__


@pytest.mark.parametrize("cls", ev.EVENT_CLASSES, ids=lambda c: c.__name__)
def test_round_trip_of_every_event_type(cls: type[ev.Event]) -> None:
    @given(events_of(cls))
    def round_trip(event: ev.Event) -> None:
        event_type, data = ev.encode_event(event)
        assert event_type == cls.__name__
        assert "type" not in data
        # What the store gives back is JSON: decode it from JSON, not from the dict we made.
        stored = msgspec.json.decode(msgspec.json.encode(data))
        assert ev.decode_event(event_type, stored) == event
        assert ev.decode_event_json(msgspec.json.encode(event)) == event

    round_trip()


@given(any_event)
def test_new_event_and_recorded_event_round_trip(event: ev.Event) -> None:
    event_id = uuid.uuid4()
    new = ev.to_new_event(event, event_id=event_id, metadata={"request_id": "r1"})
    assert isinstance(new, NewEvent)
    assert (new.type, new.event_id, new.metadata) == (
        type(event).__name__,
        event_id,
        {"request_id": "r1"},
    )
    recorded_at = datetime(2030, 1, 2, tzinfo=UTC)
    back = ev.from_recorded(_recorded(new, recorded_at))
    assert back == (event if event.at else msgspec.structs.replace(event, at=recorded_at))


def _recorded(new: NewEvent, recorded_at: datetime) -> RecordedEvent:
    return RecordedEvent(
        global_position=1,
        transaction_id=1,
        stream_id="run-1",
        category="run",
        stream_version=1,
        event_id=new.event_id or uuid.uuid4(),
        event_type=new.type,
        schema_version=1,
        data=msgspec.json.decode(msgspec.json.encode(new.data)),
        metadata=new.metadata or {},
        recorded_at=recorded_at,
    )


def test_defaults_are_left_out_of_stored_data() -> None:
    assert ev.encode_event(ev.RunStarted(attempt=1)) == ("RunStarted", {"attempt": 1})


def test_unknown_fields_are_ignored_and_missing_ones_take_defaults() -> None:
    """Schema evolution: old code reads newer events, new code reads older ones."""
    event = ev.decode_event("StepCompleted", {"step_number": 3, "added_later": [1, 2]})
    assert event == ev.StepCompleted(step_number=3)


def test_timestamps_round_trip() -> None:
    at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    event_type, data = ev.encode_event(ev.RunStarted(attempt=2, at=at))
    assert data["at"] == "2030-05-06T07:08:09.123456Z"
    assert ev.decode_event(event_type, data) == ev.RunStarted(attempt=2, at=at)


@pytest.mark.parametrize(
    ("event_type", "data", "message"),
    [
        ("NoSuchEvent", {}, "unknown event type"),
        (None, {}, "unknown event type"),
        ("Event", {}, "unknown event type"),
        ("RunStarted", [1], "must be a JSON object"),
        ("RunStarted", {}, "missing required field `attempt`"),
        ("RunStarted", {"attempt": 0}, ">= 1"),
        ("RunStarted", {"attempt": "1"}, "Expected `int`"),
        ("StepStarted", {"step_number": 0, "step_type": "nap"}, "Invalid enum value"),
        ("StepStarted", {"step_number": -1, "step_type": "response"}, ">= 0"),
        ("RunStarted", {"attempt": 1, "type": "StepStarted"}, "Invalid value"),
        (
            "RunQueued",
            {"run_id": "r", "project_id": "p", "agent_id": "a", "replay_from_step": 2},
            "go together",
        ),
        ("RunQueued", {"run_id": "", "project_id": "p", "agent_id": "a"}, "length >= 1"),
    ],
)
def test_decode_rejects_bad_rows(event_type: str, data: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        ev.decode_event(event_type, data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b'{"type": "Nope"}', "not a known event"), (b"[", "not a known event"), (42, "bytes or str")],
)
def test_decode_json_rejects_bad_input(raw: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        ev.decode_event_json(raw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("RunStarted", "expected a domain event"),
        (ev.Event(), "expected a domain event"),  # the abstract base has no tag to store
        (ev.RunStarted(attempt=0), ">= 1"),
        (ev.StepStarted(step_number=0, step_type="nap"), "Invalid enum value"),  # type: ignore[arg-type]
        (ev.RunCompleted(output=object()), "not JSON|Encoding objects"),
        (ev.BudgetSettled(reservation_id="r", actual_micro_usd=-1), ">= 0"),
    ],
)
def test_encode_rejects_invalid_events(event: object, message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        ev.encode_event(event)  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent):
        ev.validate_event(event)  # type: ignore[arg-type]


def test_replay_link_is_complete_or_absent() -> None:
    with pytest.raises(InvalidEvent, match="go together"):
        queued(replayed_from="run-0")
    assert queued(replayed_from="run-0", replay_from_step=2).replay_from_step == 2


def test_from_recorded_rejects_other_things() -> None:
    with pytest.raises(InvalidInput, match="RecordedEvent"):
        ev.from_recorded({"event_type": "RunStarted"})  # type: ignore[arg-type]


def test_to_new_event_validates() -> None:
    with pytest.raises(InvalidEvent):
        ev.to_new_event(ev.RunStarted(attempt=-3))
