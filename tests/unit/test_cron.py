"""Cron expressions on wall-clock time: parsing, and iteration checked against croniter."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from papayya.errors import InvalidCron
from papayya.triggers.cron import CronExpression
from tests.support.cron import croniter_reads_otherwise, expressions

starts = st.datetimes(datetime(1990, 1, 1), datetime(2060, 1, 1))


def croniter_times(expression: str, start: datetime, count: int) -> list[datetime]:
    it = croniter(expression, start)
    return [it.get_next(datetime) for _ in range(count)]


def my_times(expression: CronExpression, start: datetime, count: int) -> list[datetime]:
    times = []
    for _ in range(count):
        start = expression.next_after(start)
        times.append(start)
    return times


@settings(max_examples=400, deadline=None)
@given(expressions, starts)
def test_next_times_agree_with_croniter(text: str, start: datetime) -> None:
    try:
        expression = CronExpression.parse(text)
    except InvalidCron as exc:
        # Refused only when it can never fire; croniter then finds no date either.
        assert "never fires" in str(exc)
        with pytest.raises(Exception, match="failed to find"):
            croniter_times(text, start, 1)
        return
    assume(not croniter_reads_otherwise(text, expression))
    assert my_times(expression, start, 6) == croniter_times(text, start, 6)


@settings(max_examples=300, deadline=None)
@given(expressions, starts, st.integers(0, 60 * 24 * 40))
def test_matches_agrees_with_croniter(text: str, start: datetime, minutes: int) -> None:
    moment = (start + timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    try:
        expression = CronExpression.parse(text)
    except InvalidCron:
        return
    assume(not croniter_reads_otherwise(text, expression))
    assert expression.matches(moment) == croniter.match(text, moment)


def test_next_after_is_strict_and_minute_aligned() -> None:
    every = CronExpression.parse("* * * * *")
    assert every.next_after(datetime(2024, 1, 1, 10, 0)) == datetime(2024, 1, 1, 10, 1)
    assert every.next_after(datetime(2024, 1, 1, 10, 0, 59, 999)) == datetime(2024, 1, 1, 10, 1)
    leap = CronExpression.parse("0 12 29 2 *")
    assert leap.next_after(datetime(2097, 1, 1)) == datetime(2104, 2, 29, 12)  # 2100 is no leap


def test_day_fields_or_when_both_restricted() -> None:
    # The 13th, or any Friday; with the weekday `*`, only the 13th.
    either = CronExpression.parse("0 0 13 * fri")
    assert either.next_after(datetime(2024, 1, 1)) == datetime(2024, 1, 5)
    only = CronExpression.parse("0 0 13 * *")
    assert only.next_after(datetime(2024, 1, 1)) == datetime(2024, 1, 13)
    friday_13 = CronExpression.parse("0 0 ? * fri")  # ? is * in the day fields
    assert friday_13.next_after(datetime(2024, 1, 1)) == datetime(2024, 1, 5)


def test_full_day_field_is_still_restricted() -> None:
    # Only a literal * leaves a day field out: "*/1" names every day, so with a weekday
    # restriction beside it every day matches (union). croniter intersects them here.
    expression = CronExpression.parse("0 0 */1 * */4")
    assert expression.next_after(datetime(2000, 1, 2)) == datetime(2000, 1, 3)  # a Monday
    assert not croniter.match("0 0 */1 * */4", datetime(2000, 1, 3))


def test_one_value_range() -> None:
    # croniter 7 fires every minute for "5-5 * * * *" (it reads the range as "*"); cron reads
    # it as 5, and so do we.
    expression = CronExpression.parse("5-5 * * * *")
    assert expression.next_after(datetime(2024, 1, 1)) == datetime(2024, 1, 1, 0, 5)
    assert expression.next_after(datetime(2024, 1, 1, 0, 5)) == datetime(2024, 1, 1, 1, 5)


def test_sunday_as_seven() -> None:
    for text in ("0 0 * * 7", "0 0 * * 0", "0 0 * * SUN", "0 0 * * 5-7"):
        expression = CronExpression.parse(text)
        assert (
            expression.next_after(datetime(2024, 1, 1))
            == croniter_times(text, datetime(2024, 1, 1), 1)[0]
        )
        assert 0 in expression.weekdays


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "has 0 fields"),
        ("* * * *", "has 4 fields"),
        ("0 0 * * * 2024", "has 6 fields"),
        ("60 * * * *", "minute: 60 is not from 0 to 59"),
        ("* 24 * * *", "hour: 24"),
        ("* * 0 * *", "day of month: 0"),
        ("* * * 13 *", "month: 13"),
        ("* * * * 8", "day of week: 8"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("*/61 * * * *", "longer than the field's range"),
        ("5-1 * * * *", "runs backwards"),
        ("1,,2 * * * *", "empty list item"),
        ("a * * * *", "'a' is not a number"),
        ("* * * foo *", "'foo' is not a number or a name"),
        ("? * * * *", "'?' is not a number"),
        ("0 0 L * *", "'L' is not a number"),
        ("0 0 * * 1#2", "'1#2' is not a number"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30,31 2 *", "never fires"),
        ("٣ * * * *", "is not a number"),  # a non-ASCII digit
        ("* " * 120, "at most 200 characters"),
    ],
)
def test_invalid_expressions_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidCron, match=reason.replace("*", r"\*").replace("?", r"\?")):
        CronExpression.parse(text)


def test_feb_29_and_31st_are_fine_when_some_month_has_them() -> None:
    CronExpression.parse("0 0 29 2 *")
    CronExpression.parse("0 0 31 1-12 *")
    # Both day fields restricted: any Monday fires, so the 30th of February is harmless.
    CronExpression.parse("0 0 30 2 1")
