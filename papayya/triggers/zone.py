"""A cron expression in an IANA timezone: its fire instants, correct across DST. Pure.

A fire at local time *w* happens at **the first instant the local clock reads w or later**.
That one rule settles both DST changes:

- a skipped local time (the spring-forward gap) fires once, at the instant the clock jumps:
  ``30 2 * * *`` in New York fires at 03:00 EDT on the day 02:30 does not exist, and every
  time in the gap (``*/15 2 * * *``) collapses into that single fire;
- a repeated local time (the fall-back fold) fires once, on its first pass (the earlier UTC
  instant); when the clock turns back, the times it has already shown do not fire again.

So the map from wall time to instant is monotonic, and fire instants strictly increase.
``croniter`` fires a repeated time twice, and in a gap it fires at the jump or not at all
depending on where it starts, so tests/unit/test_cron_zone.py checks this module against it
away from gaps and against a minute-by-minute walk of the clock across them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo, available_timezones

from papayya.errors import InvalidTimezone
from papayya.triggers.cron import CronExpression

MAX_TIMEZONE_LENGTH: Final = 64


@cache
def _names() -> frozenset[str]:
    # A system zoneinfo directory also holds links to the machine's own zone, not IANA names.
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; only names in the tz database (no file paths, no
    ``localtime``)."""
    if not isinstance(name, str) or len(name) > MAX_TIMEZONE_LENGTH or name not in _names():
        raise InvalidTimezone(f"unknown timezone {name!r}: use an IANA name such as Europe/Paris")
    return ZoneInfo(name)


def wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local time the clock in ``zone`` shows at ``instant``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def first_instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the clock in ``zone`` reads ``local`` or later."""
    earlier = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if wall(earlier, zone) == local:
        # It exists; fold=0 is the first of two readings in a fold (PEP 495).
        return earlier
    # In a gap, fold=0 maps with the offset from before the jump (an instant after it) and
    # fold=1 with the offset after (an instant before it): the jump lies between.
    later = local.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = sorted((int(earlier.timestamp()), int(later.timestamp())))
    while low < high:  # the first second whose reading is >= local
        mid = (low + high) // 2
        if wall(datetime.fromtimestamp(mid, UTC), zone) >= local:
            high = mid
        else:
            low = mid + 1
    return datetime.fromtimestamp(low, UTC)


class CronSchedule:
    """``expression`` read in ``zone``."""

    def __init__(self, expression: str, zone: str) -> None:
        self.expression = CronExpression.parse(expression)
        self.zone = timezone(zone)

    def next_fire(self, after: datetime) -> datetime:
        """The first fire instant (UTC) strictly after ``after`` (an aware datetime)."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        # Wall times up to the reading at `after` were first shown at or before it; later
        # ones can too only inside a fold (the clock shows them a second time), so skip those.
        local = wall(after, self.zone)
        while True:
            local = self.expression.next_after(local)
            instant = first_instant(local, self.zone)
            if instant > after:
                return instant

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        fires: list[datetime] = []
        for _ in range(count):
            after = self.next_fire(after)
            fires.append(after)
        return fires

    def fires_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Every fire instant in ``(after, until]``."""
        fires: list[datetime] = []
        while (after := self.next_fire(after)) <= until:
            fires.append(after)
        return fires

    def local(self, instant: datetime) -> datetime:
        """``instant`` as an aware time in the schedule's zone."""
        return instant.astimezone(self.zone)
