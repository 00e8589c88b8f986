"""Fire instants of a cron expression in an IANA timezone, across DST changes.

Two oracles: croniter's own timezone iteration (which fires a repeated local time twice, so
its second pass is filtered out, as documented in papayya/triggers/zone.py), and a brute
force that walks UTC minute by minute and fires whenever the local clock reaches a matching
minute it has not shown before (croniter.match as the matcher).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from papayya.errors import InvalidCron, InvalidTimezone
from papayya.triggers.cron import CronExpression
from papayya.triggers.zone import CronSchedule, first_instant, timezone, wall
from tests.support.cron import croniter_reads_otherwise, expressions

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Dublin",  # negative DST in the tz database
    "Australia/Sydney",  # southern hemisphere
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Santiago",  # changes at midnight: the gap swallows 00:00
    "America/Havana",  # changes at midnight
    "America/St_Johns",  # -03:30
    "Asia/Tehran",
    "Africa/Casablanca",  # DST suspended for Ramadan: four changes a year
    "Antarctica/Troll",  # a 2-hour DST shift
    "Pacific/Apia",  # skipped 30 December 2011 entirely
    "Asia/Kolkata",  # no DST
]
MINUTE = timedelta(minutes=1)


@cache
def transitions(zone_name: str) -> tuple[tuple[datetime, bool], ...]:
    """The zone's offset changes from 2005 to 2035: (UTC instant to the minute, whether the
    clock jumps forward)."""
    zone = ZoneInfo(zone_name)
    found = []
    t = datetime(2005, 1, 1, tzinfo=UTC)
    while t < datetime(2035, 1, 1, tzinfo=UTC):
        nxt = t + timedelta(days=1)
        before, after = t.astimezone(zone).utcoffset(), nxt.astimezone(zone).utcoffset()
        assert before is not None and after is not None
        if before != after:
            low, high = t, nxt
            while high - low > MINUTE:
                mid = (low + (high - low) / 2).replace(second=0, microsecond=0)
                if mid.astimezone(zone).utcoffset() == before:
                    low = mid
                else:
                    high = mid
            found.append((high, after > before))
        t = nxt
    return tuple(found)


@st.composite
def zone_and_start(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and a start instant, usually within a day before one of its changes."""
    zone = draw(st.sampled_from(ZONES))
    changes = transitions(zone)
    if changes and draw(st.integers(0, 4)):
        change, _ = draw(st.sampled_from(changes))
        start = change - timedelta(seconds=draw(st.integers(0, 36 * 3600)))
    else:
        start = draw(
            st.datetimes(datetime(2005, 1, 1), datetime(2035, 1, 1), timezones=st.just(UTC))
        )
    return zone, start


def shown_before(moment: datetime, zone_name: str) -> datetime:
    """The latest local time the clock showed up to ``moment``, to the minute: later than
    the current reading while the clock repeats the times before a change."""
    zone = ZoneInfo(zone_name)
    readings = [wall(moment, zone)] + [
        wall(change - MINUTE, zone)
        for change, _ in transitions(zone_name)
        if moment - timedelta(hours=27) < change <= moment
    ]
    return max(readings)


def croniter_first_passes(text: str, zone_name: str, start: datetime, count: int) -> list[datetime]:
    it = croniter(text, start.astimezone(ZoneInfo(zone_name)))
    high = shown_before(start, zone_name)
    fires: list[datetime] = []
    while len(fires) < count:
        fire = it.get_next(datetime)
        local = fire.replace(tzinfo=None)
        if local > high:  # croniter's second pass through a fold shows an earlier time
            fires.append(fire.astimezone(UTC))
            high = local
    return fires


@settings(max_examples=300, deadline=None)
@given(expressions, zone_and_start())
def test_fires_agree_with_croniter_but_once_per_local_time(
    text: str, zone_start: tuple[str, datetime]
) -> None:
    zone_name, start = zone_start
    try:
        schedule = CronSchedule(text, zone_name)
    except InvalidCron:
        return
    assume(not croniter_reads_otherwise(text, schedule.expression))
    # Up to the next spring-forward gap only: from just before one, croniter can drop the
    # gap's times altogether (from 01:59:59 EST, "1-2 * * * *" next fires at 03:01 EDT)
    # and from further away it fires them at the jump. The walk below covers gaps.
    gap = next((t for t, forward in transitions(zone_name) if forward and t > start), None)
    mine = [f for f in schedule.next_fires(start, 6) if gap is None or f < gap]
    theirs = croniter_first_passes(text, zone_name, start, 6)
    assert mine == [f for f in theirs if gap is None or f < gap]


# Expressions that fire often enough to land in the changes.
dense = st.sampled_from([
    "* * * * *", "*/15 * * * *", "30 * * * *", "0 * * * *", "*/7 2 * * *", "30 2 * * *",
    "0 0 * * *", "59 23 * * *", "15 1 * * *", "45 0-3 * * *", "*/20 0-4 * * *",
])  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(dense | expressions, st.sampled_from(ZONES[1:-1]), st.data())
def test_fires_agree_with_a_minute_by_minute_walk(
    text: str, zone_name: str, data: st.DataObject
) -> None:
    try:
        schedule = CronSchedule(text, zone_name)
    except InvalidCron:
        return
    assume(not croniter_reads_otherwise(text, schedule.expression))
    zone = ZoneInfo(zone_name)
    change, _ = data.draw(st.sampled_from(transitions(zone_name)))
    start = change - timedelta(minutes=data.draw(st.integers(1, 6 * 60)))
    end = change + timedelta(hours=6)
    expected = []
    high = shown_before(start, zone_name)
    t = start + MINUTE
    while t <= end:
        local = wall(t, zone)
        minute = high.replace(second=0) + MINUTE
        # Fires if the clock now reaches a matching minute it never showed before (one in
        # a gap it jumped over, or the one it shows).
        while minute <= local:
            if croniter.match(text, minute):
                expected.append(t)
                break
            minute += MINUTE
        high = max(high, local)
        t += MINUTE
    assert schedule.fires_between(start, end) == expected


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo("America/New_York"))


def test_skipped_local_time_fires_once_when_the_clock_jumps() -> None:
    # 2024-03-10: New York clocks go from 02:00 EST to 03:00 EDT.
    daily = CronSchedule("30 2 * * *", "America/New_York")
    fires = daily.next_fires(ny(2024, 3, 9, 12), 3)
    assert fires == [ny(2024, 3, 10, 3, 0), ny(2024, 3, 11, 2, 30), ny(2024, 3, 12, 2, 30)]
    # Every time in the skipped hour collapses into that one fire.
    quarterly = CronSchedule("*/15 2 * * *", "America/New_York")
    assert quarterly.next_fires(ny(2024, 3, 10, 1), 2) == [ny(2024, 3, 10, 3), ny(2024, 3, 11, 2)]


def test_repeated_local_time_fires_once_on_its_first_pass() -> None:
    # 2024-11-03: New York clocks go from 02:00 EDT back to 01:00 EST.
    daily = CronSchedule("30 1 * * *", "America/New_York")
    first = daily.next_fire(ny(2024, 11, 2, 12))
    assert first == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert daily.next_fire(first) == datetime(2024, 11, 4, 6, 30, tzinfo=UTC)  # next day, EST
    hourly = CronSchedule("0 * * * *", "America/New_York")
    fires = hourly.next_fires(datetime(2024, 11, 3, 4, 30, tzinfo=UTC), 3)
    # 01:00 EDT, then (01:00 EST already shown) 02:00 EST.
    assert [f.isoformat() for f in fires] == [
        "2024-11-03T05:00:00+00:00",
        "2024-11-03T07:00:00+00:00",
        "2024-11-03T08:00:00+00:00",
    ]
    # Starting inside the second pass: the times shown in the first pass do not fire again.
    inside = datetime(2024, 11, 3, 6, 10, tzinfo=UTC)  # 01:10 EST
    assert CronSchedule("30 1 * * *", "America/New_York").next_fire(inside) == datetime(
        2024, 11, 4, 6, 30, tzinfo=UTC
    )


def test_midnight_gap_and_a_skipped_day() -> None:
    # Santiago, 2024-09-08: 00:00 -04 becomes 01:00 -03, so midnight fires at 01:00.
    santiago = CronSchedule("0 0 * * *", "America/Santiago")
    fire = santiago.next_fire(datetime(2024, 9, 7, 12, tzinfo=UTC))
    assert fire.astimezone(ZoneInfo("America/Santiago")).isoformat() == "2024-09-08T01:00:00-03:00"
    # Apia skipped 30 December 2011: its midnight and the 31st's are one fire.
    apia = CronSchedule("0 0 * * *", "Pacific/Apia")
    fires = apia.next_fires(datetime(2011, 12, 28, 12, tzinfo=UTC), 3)
    local = [f.astimezone(ZoneInfo("Pacific/Apia")).isoformat() for f in fires]
    assert local == [
        "2011-12-29T00:00:00-10:00",
        "2011-12-31T00:00:00+14:00",
        "2012-01-01T00:00:00+14:00",
    ]


def test_first_instant_is_monotonic_through_changes() -> None:
    zone = ZoneInfo("Australia/Lord_Howe")
    local = datetime(2024, 4, 6, 23, 0)
    previous = first_instant(local, zone)
    for _ in range(6 * 60):
        local += MINUTE
        current = first_instant(local, zone)
        assert current >= previous
        assert wall(current, zone) >= local
        previous = current


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "../etc/passwd", "localtime", "utc ", "x" * 65]
)
def test_unknown_timezones_are_refused(name: str) -> None:
    with pytest.raises(InvalidTimezone, match="unknown timezone"):
        timezone(name)


def test_fires_need_an_aware_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSchedule("* * * * *", "UTC").next_fire(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        CronExpression.parse("* * * * *").next_after(datetime(2024, 1, 1, tzinfo=UTC))
