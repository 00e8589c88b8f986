"""What a worker keeps of an attempt's output: its last lines within an explicit cap, marked
truncated when it dropped older ones, always one event per attempt, secrets redacted."""

from __future__ import annotations

from workers.worker import OUTPUT_EVENT_CHARS, REDACTED, agent_output, redacted


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
