"""Cron expressions on wall-clock time: parsing, and iteration checked against croniter."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from papayya.errors import InvalidCron
from papayya.triggers.cron import CronExpression

MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@st.composite
def field_part(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None) -> str:
    """One item of a field's comma list, in any of the forms the parser accepts."""
    span = high - low + 1

    def value(v: int) -> str:
        if names and draw(st.booleans()):
            return draw(st.sampled_from([str.lower, str.upper, str.capitalize]))(names[v - low])
        return str(v)

    a = draw(st.integers(low, high - 1))
    # b > a: croniter reads a one-value range "5-5" as "*" (test_one_value_range).
    b = draw(st.integers(a + 1, high))
    step = draw(st.integers(1, span))
    return draw(
        st.sampled_from(
            [
                "*",
                f"*/{step}",
                value(draw(st.integers(low, high))),
                f"{value(a)}-{value(b)}",
                f"{value(a)}-{value(b)}/{step}",
                f"{a}/{step}",
            ]
        )
    )


def field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    items = st.lists(field_part(low, high, names), min_size=1, max_size=3)
    return items.map(lambda parts: "*" if "*" in parts else ",".join(parts))


# Day of week up to 6 in ranges and steps (croniter reads 7 as Sunday only as a single value,
# which `sunday_as_seven` covers).
expressions = st.one_of(
    st.tuples(
        field(0, 59),
        field(0, 23),
        field(1, 31),
        field(1, 12, MONTH_NAMES),
        field(0, 6, DAY_NAMES),
    ).map(" ".join),
    st.sampled_from(["@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly"]),
)
starts = st.datetimes(datetime(1990, 1, 1), datetime(2060, 1, 1))


def croniter_reads_otherwise(text: str, expression: CronExpression) -> bool:
    """Whether croniter's day-field heuristic applies: it treats a day field that covers
    every day (``*/1``, ``1-31``) as ``*`` when the other day field's text holds a ``*``
    (``*/4``), and so intersects the two where POSIX cron, and we, take the union
    (test_full_day_field_is_still_restricted)."""
    if text.startswith("@"):
        return False
    dom, dow = text.split()[2], text.split()[4]
    if dom == "*" or dow == "*":
        return False
    return (len(expression.days) == 31 and "*" in dow) or (
        len(expression.weekdays) == 7 and "*" in dom
    )


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
