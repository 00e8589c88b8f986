"""Five-field cron expressions, matched and iterated on local wall-clock time. Pure.

Syntax: ``minute hour day-of-month month day-of-week``; each field a comma list of ``*``,
``N``, ``N-M``, ``*/S``, ``N-M/S`` or ``N/S`` (N to the field's end); month and weekday
names (``jan``, ``mon``); weekday 0 or 7 is Sunday; ``?`` is ``*`` in the day fields; the
macros ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/
``@annually``. When both day fields are restricted (neither is ``*``), a day matching either
one matches (POSIX cron, and ``croniter``'s default). Quartz extensions (``L``, ``W``, ``#``,
seconds, years) are refused rather than guessed at.

Time zones are ``zone.py``'s business: everything here works on naive local times.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

from papayya.errors import InvalidCron

MAX_LENGTH: Final = 200
# Feb 29 with no weekday restriction recurs at most every 8 years (2096 -> 2104); an
# expression that can fire at all does so well within this horizon.
HORIZON_YEARS: Final = 30
MONTHS: Final = {n.lower(): i for i, n in enumerate(calendar.month_abbr) if n}
WEEKDAYS: Final = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    # Where ``*`` and ``N/S`` end, when a value beyond it is only an alias (Sunday as 7).
    span_high: int | None = None

    @property
    def end(self) -> int:
        return self.high if self.span_high is None else self.span_high


FIELDS: Final = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, MONTHS),
    _Field("day of week", 0, 7, WEEKDAYS, span_high=6),
)
_STARS: Final = frozenset(("*", "?"))
_ONE_MINUTE: Final = timedelta(minutes=1)


def _value(text: str, field: _Field) -> int:
    if field.names is not None and text.lower() in field.names:
        return field.names[text.lower()]
    if not text.isdigit() or not text.isascii():
        raise InvalidCron(f"{field.name}: {text!r} is not a number" + _named(field))
    value = int(text)
    if not field.low <= value <= field.high:
        raise InvalidCron(f"{field.name}: {value} is not from {field.low} to {field.high}")
    return value


def _named(field: _Field) -> str:
    return " or a name" if field.names else ""


def _part(text: str, field: _Field, star_ok: bool) -> range:
    """One comma-separated part of a field, as the range of values it stands for."""
    span, slash, step_text = text.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or not step_text.isascii() or int(step_text) < 1:
            raise InvalidCron(f"{field.name}: step {step_text!r} must be a positive number")
        step = int(step_text)
        if step > field.end - field.low + 1:
            raise InvalidCron(f"{field.name}: step {step} is longer than the field's range")
    if span in _STARS and (span == "*" or star_ok):
        return range(field.low, field.end + 1, step)
    first, dash, last = span.partition("-")
    low = _value(first, field)
    if dash:
        high = _value(last, field)
        if high < low:
            raise InvalidCron(f"{field.name}: range {span!r} runs backwards")
    else:
        high = max(field.end, low) if slash else low
    return range(low, high + 1, step)


def _parse_field(text: str, field: _Field, star_ok: bool) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise InvalidCron(f"{field.name}: empty list item in {text!r}")
        values.update(_part(part, field, star_ok))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed expression; ``weekdays`` counts from Sunday = 0."""

    text: str
    minutes: tuple[int, ...]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_or: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        if not isinstance(text, str) or len(text) > MAX_LENGTH:
            raise InvalidCron(f"a cron expression is a string of at most {MAX_LENGTH} characters")
        expanded = MACROS.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise InvalidCron(
                f"{text!r} has {len(parts)} fields; expected 5: "
                "minute hour day-of-month month day-of-week"
            )
        minute, hour, dom, month, dow = (
            _parse_field(p, f, star_ok=i in (2, 4))
            for i, (p, f) in enumerate(zip(parts, FIELDS, strict=True))
        )
        expression = cls(
            text=text,
            minutes=tuple(sorted(minute)),
            hours=hour,
            days=dom,
            months=month,
            weekdays=frozenset(d % 7 for d in dow),
            day_or=parts[2] not in _STARS and parts[4] not in _STARS,
        )
        expression._check_fires(dom_restricted=parts[2] not in _STARS, dow_any=parts[4] in _STARS)
        return expression

    def _check_fires(self, dom_restricted: bool, dow_any: bool) -> None:
        """Refuse an expression that never fires (``0 0 30 2 *``): only a day of the month
        ANDed with every weekday can name days that no month has."""
        if dom_restricted and dow_any:
            longest = max(29 if m == 2 else calendar.monthrange(2001, m)[1] for m in self.months)
            if min(self.days) > longest:
                raise InvalidCron(f"{self.text!r} never fires: no such day in those months")

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        # isoweekday: Monday 1 .. Sunday 7; cron: Sunday 0.
        in_week = day.isoweekday() % 7 in self.weekdays
        return (in_month or in_week) if self.day_or else (in_month and in_week)

    def matches(self, moment: datetime) -> bool:
        """Whether the minute holding ``moment`` (a wall-clock time) fires."""
        return (
            self.matches_day(moment.date())
            and moment.hour in self.hours
            and moment.minute in self.minutes
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first firing wall-clock minute strictly after ``moment`` (naive)."""
        if moment.tzinfo is not None:
            raise ValueError("next_after works on naive wall-clock times")
        t = moment.replace(second=0, microsecond=0) + _ONE_MINUTE
        horizon = t.year + HORIZON_YEARS
        while t.year <= horizon:
            if t.month not in self.months:
                t = _first_of_next_month(t)
            elif not self.matches_day(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            else:
                i = bisect_left(self.minutes, t.minute)
                if i < len(self.minutes):
                    return t.replace(minute=self.minutes[i])
                t = t.replace(minute=0) + timedelta(hours=1)
        raise InvalidCron(f"{self.text!r} does not fire within {HORIZON_YEARS} years")


def _first_of_next_month(t: datetime) -> datetime:
    return datetime(t.year + 1, 1, 1) if t.month == 12 else datetime(t.year, t.month + 1, 1)
