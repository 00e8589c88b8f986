"""Record/replay matching (DESIGN §5): fingerprints, task labels, the replay cursor."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papayya.domain import events as ev
from papayya.domain.matcher import (
    Recorded,
    Replayer,
    fingerprint,
    llm_fingerprint,
    recorded_calls,
    task_fingerprint,
    task_label,
    tool_fingerprint,
)
from papayya.errors import InvalidInput
from tests.support.strategies import json_values, llm, queued, tool


@st.composite
def recordings(draw: st.DrawFn, min_size: int = 0) -> list[Recorded]:
    """Calls in step order: several calls may share a step (a model call and its tools)."""
    gaps = draw(st.lists(st.integers(0, 2), min_size=min_size, max_size=25))
    steps = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    return [
        Recorded(
            step_number=n,
            kind=draw(st.sampled_from(["llm", "tool", "task"])),
            fingerprint=draw(st.sampled_from(["f1", "f2", "f3"])),
            result=draw(json_values),
        )
        for n in steps
    ]


def replay(replayer: Replayer, calls: list[Recorded]) -> list[Recorded | None]:
    return [replayer.match(c.kind, c.fingerprint) for c in calls]


@given(recordings())
def test_the_same_calls_are_all_answered_from_the_recording(recorded: list[Recorded]) -> None:
    replayer = Replayer(recorded)
    assert replay(replayer, recorded) == recorded
    assert (replayer.matched, replayer.diverged_at_step, replayer.live) == (
        len(recorded),
        None,
        True,
    )
    assert replayer.match("llm", "more") is None  # past the recording: live, not a divergence
    assert replayer.diverged_at_step is None


@given(recordings(min_size=1), st.data())
def test_the_first_mismatch_diverges_and_everything_after_runs_live(
    recorded: list[Recorded], data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(recorded) - 1))
    changed = recorded[k]
    if data.draw(st.booleans()):
        changed = Recorded(step_number=changed.step_number, kind=changed.kind, fingerprint="other")
    else:
        kind = "task" if changed.kind != "task" else "tool"
        changed = Recorded(
            step_number=changed.step_number, kind=kind, fingerprint=changed.fingerprint
        )
    calls = [*recorded[:k], changed, *recorded[k + 1 :]]
    replayer = Replayer(recorded)
    answers = replay(replayer, calls)
    assert answers[:k] == recorded[:k]
    assert answers[k:] == [None] * (len(recorded) - k)  # no re-sync after a divergence
    assert replayer.diverged_at_step == recorded[k].step_number
    assert (replayer.matched, replayer.live) == (k, True)


@given(recordings(), st.integers(0, 60))
def test_only_steps_before_until_step_are_answered(recorded: list[Recorded], until: int) -> None:
    replayer = Replayer(recorded, until_step=until)
    answers = replay(replayer, recorded)
    before = [c for c in recorded if c.step_number < until]
    assert answers == [*before, *[None] * (len(recorded) - len(before))]
    assert replayer.diverged_at_step is None
    assert replayer.matched == len(before)


def test_expected_shows_the_next_recorded_call() -> None:
    first = Recorded(step_number=0, kind="llm", fingerprint="a")
    replayer = Replayer([first])
    assert replayer.expected == first and not replayer.live
    replayer.match("llm", "a")
    assert replayer.expected is None and replayer.live
    assert Replayer([]).live


@pytest.mark.parametrize(
    ("recorded", "until", "message"),
    [
        ("abc", None, "sequence of Recorded"),
        (None, None, "sequence of Recorded"),
        ([{"step_number": 0}], None, "expected a Recorded call"),
        (
            [
                Recorded(step_number=2, kind="llm", fingerprint="a"),
                Recorded(step_number=1, kind="llm", fingerprint="b"),
            ],
            None,
            "step order",
        ),
        ([], -1, "until_step"),
        ([], True, "until_step"),
        ([], "3", "until_step"),
    ],
)
def test_replayer_rejects_bad_input(recorded: Any, until: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Replayer(recorded, until_step=until)


@pytest.mark.parametrize(
    ("kind", "fp", "message"),
    [("nope", "f", "kind must be"), ("llm", "", "fingerprint"), ("llm", 3, "fingerprint")],
)
def test_match_rejects_bad_input(kind: Any, fp: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Replayer([]).match(kind, fp)


def test_fingerprints_are_canonical() -> None:
    a = fingerprint("llm", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    b = fingerprint("llm", {"messages": [{"content": "hi", "role": "user"}], "model": "m"})
    assert a == b and len(a) == 64 and int(a, 16) >= 0
    assert fingerprint("tool", {"x": 1}) != fingerprint("task", {"x": 1})
    assert fingerprint("llm", {"x": 1}) != fingerprint("llm", {"x": 2})


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_fingerprints_do_not_depend_on_key_order(payload: dict[str, Any]) -> None:
    reordered = dict(reversed(list(payload.items())))
    assert fingerprint("tool", payload) == fingerprint("tool", reordered)


def test_llm_fingerprint_ignores_how_the_response_is_delivered() -> None:
    body = {"model": "m", "messages": []}
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert llm_fingerprint(body) == llm_fingerprint(streamed) == fingerprint("llm", body)
    assert llm_fingerprint({**body, "temperature": 0}) != llm_fingerprint(body)


def test_tool_and_task_fingerprints() -> None:
    assert tool_fingerprint("search", {"q": 1}) == fingerprint(
        "tool", {"tool": "search", "arguments": {"q": 1}}
    )
    assert tool_fingerprint("search", {"q": 1}) != tool_fingerprint("fetch", {"q": 1})
    assert task_fingerprint("search#2") == fingerprint("task", "search#2")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fingerprint("nope", {}), "kind must be"),  # type: ignore[arg-type]
        (lambda: fingerprint("llm", object()), "not JSON-serialisable"),
        (lambda: fingerprint("llm", {1j: 1}), "not JSON-serialisable"),
        (lambda: llm_fingerprint([1]), "JSON object"),  # type: ignore[arg-type]
        (lambda: tool_fingerprint("", {}), "tool must be"),
        (lambda: tool_fingerprint("t", {1, 2, object()}), "not JSON-serialisable"),
        (lambda: task_fingerprint(""), "label must be"),
        (lambda: task_fingerprint(None), "label must be"),  # type: ignore[arg-type]
    ],
)
def test_fingerprint_rejects_bad_input(call: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call()


def test_task_labels_number_repeats() -> None:
    seen: dict[str, int] = {}
    labels = [task_label(x, seen) for x in ["search", "fetch", "search", "search", "fetch"]]
    assert labels == ["search", "fetch", "search#2", "search#3", "fetch#2"]
    assert seen == {"search": 3, "fetch": 2}


@pytest.mark.parametrize(
    ("label", "seen", "message"),
    [
        ("", {}, "non-empty"),
        ("  ", {}, "non-empty"),
        (3, {}, "non-empty"),
        ("x" * 201, {}, "at most 200"),
        ("search#2", {}, "may not end in"),
        ("search", (), "mutable mapping"),
    ],
)
def test_task_label_rejects_bad_input(label: Any, seen: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        task_label(label, seen)
    assert task_label("a#b", {}) == "a#b"  # a '#' elsewhere is fine


def test_recorded_calls_come_from_completed_steps_in_order() -> None:
    events: list[ev.RunEvent] = [
        queued(),
        ev.RunStarted(attempt=1),
        ev.StepStarted(step_number=0, step_type="tool_call"),
        llm(0, fingerprint="m0", response_ref="p0"),
        ev.StepCompleted(step_number=0),
        tool(0, fingerprint="t0", output={"hits": 1}),
        ev.StepStarted(step_number=1, step_type="checkpoint", label="sum"),
        ev.CheckpointSaved(step_number=1, label="sum", fingerprint="c1", result=7, result_ref=None),
        ev.StepCompleted(step_number=1),
        ev.StepStarted(step_number=2, step_type="response"),
        llm(2, fingerprint="m2", error="rate_limited"),
        ev.StepFailed(step_number=2, error_code="provider_error"),
        ev.StepStarted(step_number=3, step_type="response"),
        llm(3, fingerprint="m3"),  # in flight when the attempt was lost
        ev.RunStarted(attempt=2),
    ]
    assert recorded_calls(events) == [
        Recorded(step_number=0, kind="llm", fingerprint="m0", result_ref="p0"),
        Recorded(step_number=0, kind="tool", fingerprint="t0", result={"hits": 1}),
        Recorded(step_number=1, kind="task", fingerprint="c1", result=7),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "events",
        {"a": 1},
        3,
        [1],
        [ev.AgentDefined(agent_id="a", project_id="p", name="n", slug="s")],
    ],
)
def test_recorded_calls_rejects_bad_input(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        recorded_calls(bad)
