"""Helpers of the bounds tests: request bodies generated from the API's own msgspec types,
with numbers at, just past and far past their bounds; and a projector that fails on demand."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import msgspec
import msgspec.inspect as mi
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import web.app  # noqa: F401  (importing the app registers every route)
from eventstore.protocol import EventStore
from projections.projector import Envelope, Projector
from web.openapi import api

T = TypeVar("T")

# What no bound lets through, whatever the field: past int64, past any column, and floats
# standing for integers (JSON has no integer type of its own; 1e23 is how a client sends 10**23).
HUGE_INTS = (2**31, 2**40, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**23, -1, -(2**63) - 1)
HUGE_FLOATS = (1e23, 1.5, -0.0, 1e308, -1e308, 2.0**63)
EDGE_DECIMALS = ("1e30", "NaN", "Infinity", "-1", "0.000001", "10000000000", "10000000001")


def body_routes() -> list[tuple[str, Any]]:
    """Every operation of the API that takes a body, with the type it is decoded into."""
    return [(f"{r.method} {r.path}", r.body) for r in api.routes if r.body is not None]


def ints(info: mi.IntType) -> st.SearchStrategy[Any]:
    lo = info.ge if info.ge is not None else -(2**70)
    hi = info.le if info.le is not None else 2**70
    edges = [v for v in (lo, hi, lo - 1, hi + 1) if v is not None]
    return st.sampled_from([*edges, *HUGE_INTS, *HUGE_FLOATS]) | st.integers(lo, hi)


def floats(info: mi.FloatType) -> st.SearchStrategy[Any]:
    lo = info.ge if info.ge is not None else -1e308
    hi = info.le if info.le is not None else 1e308
    edges = [lo, hi, lo - 1, hi * 2 if hi > 0 else 1.0]
    finite = [v for v in edges if abs(v) < 1.7e308]
    return st.sampled_from([*finite, *HUGE_FLOATS, *HUGE_INTS]) | st.floats(lo, hi)


def strings(info: mi.StrType) -> st.SearchStrategy[str]:
    low, high = info.min_length or 0, min(info.max_length or 12, 12)
    if info.pattern is None:
        return st.text(alphabet="abcxyz-_ 09", min_size=low, max_size=max(high, low))
    pattern = re.compile(info.pattern)
    known = ["x", "run-1", "a", "0 9 * * *", "UTC", "http://example.com/cb", "agent", "fn_1"]
    fits = [s for s in known if pattern.fullmatch(s) and low <= len(s) <= (info.max_length or 99)]
    generated = st.from_regex(pattern, fullmatch=True).filter(
        lambda s: low <= len(s) <= (info.max_length or 99)
    )
    return st.sampled_from(fits) | generated if fits else generated


def values(info: mi.Type) -> st.SearchStrategy[Any]:
    """JSON builtins that ``info`` may or may not accept (numbers mostly at its edges)."""
    if isinstance(info, mi.IntType):
        return ints(info)
    if isinstance(info, mi.FloatType):
        return floats(info)
    if isinstance(info, mi.DecimalType):
        return st.sampled_from(EDGE_DECIMALS) | st.sampled_from([10**10, 10**10 + 1, 1e30, 5])
    if isinstance(info, mi.StrType):
        return strings(info)
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of([values(t) for t in info.types])
    if isinstance(info, mi.DateTimeType):
        return st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat())
    if isinstance(info, mi.ListType | mi.VarTupleType):
        return st.lists(values(info.item_type), max_size=2)
    if isinstance(info, mi.DictType):
        return st.dictionaries(
            strings(mi.StrType(max_length=8)), values(info.value_type), max_size=2
        )
    if isinstance(info, mi.StructType):
        required = {f.encode_name: values(f.type) for f in info.fields if f.required}
        optional = {f.encode_name: values(f.type) for f in info.fields if not f.required}
        return st.fixed_dictionaries(required, optional=optional)
    if isinstance(info, mi.AnyType):
        return st.none() | st.integers(-5, 5) | st.text(max_size=4)
    raise NotImplementedError(f"no strategy for {info!r}")


def numeric_fields(info: mi.StructType) -> st.SearchStrategy[dict[str, Any]]:
    """Only the numeric fields of a struct (any subset), at their edges."""
    return st.fixed_dictionaries(
        {}, optional={f.encode_name: values(f.type) for f in info.fields if _numeric(f.type)}
    )


def _numeric(info: mi.Type) -> bool:
    if isinstance(info, mi.UnionType):
        return any(_numeric(t) for t in info.types)
    return isinstance(info, mi.IntType | mi.FloatType | mi.DecimalType)


def numbers(value: Any, info: mi.Type, path: str = "$") -> Iterator[tuple[str, Any]]:
    """The values a decoded body holds in fields *typed* as numbers (an ``Any`` field holds
    JSON that is kept as JSON, so it is no number of the domain's)."""
    if value is msgspec.UNSET:
        return
    if isinstance(info, mi.UnionType):
        for t in info.types:
            if _fits(value, t):
                yield from numbers(value, t, path)
                return
        return
    if isinstance(info, mi.IntType | mi.FloatType | mi.DecimalType):
        yield path, value
    elif isinstance(info, mi.StructType):
        for f in info.fields:
            yield from numbers(getattr(value, f.name), f.type, f"{path}.{f.encode_name}")
    elif isinstance(info, mi.ListType | mi.VarTupleType):
        for i, item in enumerate(value):
            yield from numbers(item, info.item_type, f"{path}[{i}]")
    elif isinstance(info, mi.DictType):
        for k, item in value.items():
            yield from numbers(item, info.value_type, f"{path}.{k}")


def _fits(value: Any, info: mi.Type) -> bool:
    kinds: dict[type[mi.Type], Any] = {
        mi.IntType: int,
        mi.FloatType: float,
        mi.DecimalType: Decimal,
        mi.StrType: str,
        mi.BoolType: bool,
        mi.NoneType: type(None),
        mi.StructType: msgspec.Struct,
        mi.DictType: dict,
        mi.ListType: list,
    }
    kind = kinds.get(type(info))
    if kind is None:
        return False
    if kind is int and isinstance(value, bool):
        return False
    return isinstance(value, kind)


def collect(strategy: st.SearchStrategy[T], examples: int) -> list[T]:
    """Values drawn by hypothesis (its edge-seeking generation, without I/O in the loop), for
    a test that then sends them to a server of its own."""
    found: list[T] = []

    @settings(
        max_examples=examples,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(value: T) -> None:
        found.append(value)

    draw()
    return found


class FailingProjector(Projector):
    """Writes nothing, and fails on the events in ``poison`` until they are cleared."""

    name = "failing_probe"
    categories = frozenset({"run"})
    tables = ()

    def __init__(self, store: EventStore, *, suffix: str = "") -> None:
        super().__init__(store, suffix=suffix)
        self.poison: set[Any] = set()

    async def handle(self, conn: asyncpg.Connection, batch: Sequence[Envelope]) -> None:
        for item in batch:
            if item.recorded.event_id in self.poison:
                raise ValueError(f"cannot handle {item.recorded.event_type}")
