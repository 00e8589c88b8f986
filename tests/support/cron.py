"""Cron expressions drawn by Hypothesis in every form the parser accepts, and the one case in
which croniter, the reference the property tests compare against, reads a day field otherwise."""

from __future__ import annotations

from hypothesis import strategies as st

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
