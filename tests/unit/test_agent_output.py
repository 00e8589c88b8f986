"""What a worker keeps of an attempt's output: lines recorded while it runs and its last
lines when it ends, within an explicit cap per attempt across all its events, marked
truncated when lines were dropped, always a final event per attempt, secrets redacted."""

from __future__ import annotations

import pytest

from papayya.domain import events as ev
from papayya.models import run_logs_out
from workers.process import OUTPUT_LINES
from workers.worker import (
    OUTPUT_EVENT_CHARS,
    OUTPUT_EVENT_LINES,
    REDACTED,
    OutputLog,
    WorkerConfig,
    agent_output,
    redacted,
)


def test_an_attempts_output_keeps_its_last_lines_within_the_cap_and_says_it_cut() -> None:
    lines = [(float(i), f"{i:06d}" + "x" * 993) for i in range(200)]  # 200,000 characters
    (event,) = agent_output(2, lines)
    kept = [text for _, text in event.lines]
    assert event.attempt == 2 and event.truncated
    assert sum(len(t) + 1 for t in kept) <= OUTPUT_EVENT_CHARS
    assert kept == [t for _, t in lines[-len(kept) :]] and len(kept) == OUTPUT_EVENT_CHARS // 1000


def test_a_quiet_attempt_still_says_its_output_is_all_there() -> None:
    (event,) = agent_output(1, [])
    assert event.lines == () and not event.truncated
    (small,) = agent_output(1, [(1.0, "hello")])
    assert small.lines == ((1.0, "hello"),) and not small.truncated


def test_secret_values_are_redacted_and_short_ones_left_alone() -> None:
    lines = [(1.0, "token=abcd1234 and abcd1234abcd"), (2.0, "a b c")]
    shown = redacted(lines, ["abcd1234", "abcd1234abcd", "b"])
    assert shown == [(1.0, f"token={REDACTED} and {REDACTED}"), (2.0, "a b c")]
    assert redacted(lines, []) == lines


# -- recorded while the attempt runs -------------------------------------------------------


def test_live_flushes_record_only_new_lines_and_the_final_event_the_rest() -> None:
    log = OutputLog(1)
    assert log.live(0, []) is None  # nothing read yet: no event
    first = log.live(2, [(1.0, "a"), (2.0, "b")])
    assert first is not None
    event, log = first
    assert event.lines == ((1.0, "a"), (2.0, "b")) and not event.final and not event.truncated
    assert log.live(2, [(1.0, "a"), (2.0, "b")]) is None  # nothing new since
    second = log.live(3, [(1.0, "a"), (2.0, "b"), (3.0, "c")])
    assert second is not None and second[0].lines == ((3.0, "c"),)
    log = second[1]
    last = log.final(4, [(1.0, "a"), (2.0, "b"), (3.0, "c"), (4.0, "d")])
    assert last.lines == ((4.0, "d"),) and last.final and not last.truncated
    assert log.final(3, [(1.0, "a"), (2.0, "b"), (3.0, "c")]).lines == ()  # all flushed


def test_the_per_attempt_bound_holds_across_flushes_and_the_cut_is_marked() -> None:
    log = OutputLog(1)
    read: list[tuple[float, str]] = []
    events = []
    for tick in range(50):  # 50 flushes of 20 new lines of 500 characters: 500,000 in all
        read += [(float(tick * 20 + i), f"{tick:03d}-{i:03d}" + "y" * 492) for i in range(20)]
        kept = read[-OUTPUT_LINES:]  # what the runtime keeps
        flush = log.live(len(read), kept)
        if flush is not None:
            events.append(flush[0])
            log = flush[1]
    events.append(log.final(len(read), read[-OUTPUT_LINES:]))
    recorded = [text for e in events for _, text in e.lines]
    assert sum(len(t) + 1 for t in recorded) <= OUTPUT_EVENT_CHARS
    assert len(recorded) <= OUTPUT_EVENT_LINES
    assert len(set(recorded)) == len(recorded)  # no line twice
    assert recorded[0] == read[0][1] and recorded[-1] == read[-1][1]  # first and last kept
    assert any(e.truncated for e in events) and [e.final for e in events][-1]
    assert sum(e.final for e in events) == 1


def test_lines_the_runtime_dropped_between_flushes_are_marked_truncated() -> None:
    flush = OutputLog(1).live(5, [(4.0, "d"), (5.0, "e")])  # 3 of 5 lost before the flush
    assert flush is not None and flush[0].truncated and flush[0].lines == ((4.0, "d"), (5.0, "e"))


def test_every_flush_is_redacted() -> None:
    flush = OutputLog(1).live(1, [(1.0, "key abcd1234")], ["abcd1234"])
    assert flush is not None and flush[0].lines == ((1.0, f"key {REDACTED}"),)
    last = flush[1].final(2, [(1.0, "x"), (2.0, "again abcd1234")], ["abcd1234"])
    assert last.lines == ((2.0, f"again {REDACTED}"),)


def test_run_logs_merge_an_attempts_events_and_count_it_complete_at_its_final_one() -> None:
    live = ev.AgentOutput(attempt=1, lines=((1.0, "a"),), final=False)
    more = ev.AgentOutput(attempt=1, lines=((2.0, "b"),), final=False, truncated=True)
    out = run_logs_out([live, more])
    assert [line.text for line in out.data] == ["a", "b"] and out.attempts == [] and out.truncated
    out = run_logs_out([live, more, ev.AgentOutput(attempt=1, lines=((3.0, "c"),))])
    assert [line.text for line in out.data] == ["a", "b", "c"] and out.attempts == [1]


def test_an_old_single_event_stream_still_reads_as_complete() -> None:
    # As stored before output was recorded live: no ``final`` field.
    stored = {"attempt": 2, "lines": [[1.5, "old line"]], "truncated": False}
    event = ev.decode_event("AgentOutput", stored)
    assert isinstance(event, ev.AgentOutput) and event.final
    out = run_logs_out([event])
    assert out.attempts == [2] and [line.text for line in out.data] == ["old line"]


def test_the_flush_interval_is_a_setting_within_bounds() -> None:
    assert WorkerConfig.from_env({}).output_flush_seconds == 2.0
    half = WorkerConfig.from_env({"PAPAYYA_OUTPUT_FLUSH_SECONDS": "0.5"})
    assert half.output_flush_seconds == 0.5
    for bad in ("0", "-1", "0.01", "61", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match="PAPAYYA_OUTPUT_FLUSH_SECONDS"):
            WorkerConfig.from_env({"PAPAYYA_OUTPUT_FLUSH_SECONDS": bad})
