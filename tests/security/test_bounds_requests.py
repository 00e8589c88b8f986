"""Every number a request body can carry has a domain bound (issue 14 §2), checked while the
body is decoded, before anything is appended. Generic over ``/openapi.json``'s operations, so
a new route or field is covered without touching this file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, overload

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings

from papayya.domain import bounds
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.rules import check_folded
from papayya.domain.state import StepState
from papayya.errors import InvalidEvent, StepLimitReached
from tests.support.bounds import body_routes, numbers, values

ROUTES = body_routes()


def _bounded(info: mi.Type, path: str = "$") -> list[str]:
    """Paths of the numeric fields that have no upper or lower bound."""
    if isinstance(info, mi.UnionType):
        return [p for t in info.types for p in _bounded(t, path)]
    if isinstance(info, mi.IntType | mi.FloatType):
        low = info.ge if info.ge is not None else info.gt
        high = info.le if info.le is not None else info.lt
        return [] if low is not None and high is not None else [path]
    if isinstance(info, mi.StructType):
        return [p for f in info.fields for p in _bounded(f.type, f"{path}.{f.encode_name}")]
    if isinstance(info, mi.ListType | mi.VarTupleType):
        return _bounded(info.item_type, f"{path}[]")
    if isinstance(info, mi.DictType):
        return _bounded(info.value_type, f"{path}.*")
    return []


def test_routes_with_bodies_are_found() -> None:
    assert len(ROUTES) >= 20  # the generic tests below really cover the API


@pytest.mark.parametrize(("route", "body"), ROUTES, ids=[r for r, _ in ROUTES])
def test_every_integer_and_float_field_has_both_bounds(route: str, body: Any) -> None:
    assert _bounded(mi.type_info(body)) == [], f"{route}: unbounded numbers"


def _acceptable(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value <= bounds.MAX_MICRO_USD  # the largest bound the API has
    if isinstance(value, float):
        return math.isfinite(value) and 0 <= value <= bounds.MAX_MILLIS
    if isinstance(value, Decimal):
        return value.is_finite() and 0 <= value <= bounds.MAX_BUDGET_USD
    return False


@pytest.mark.parametrize(("route", "body"), ROUTES, ids=[r for r, _ in ROUTES])
def test_a_body_the_api_accepts_carries_only_numbers_in_their_bounds(route: str, body: Any) -> None:
    info = mi.type_info(body)

    @settings(max_examples=150, deadline=None)
    @given(values(info))
    def accepted(sent: Any) -> None:
        raw = msgspec.json.encode(sent)
        try:
            decoded = msgspec.json.decode(raw, type=body)
        except msgspec.ValidationError:
            return  # refused: a 400 (web.http.body), nothing written
        for path, number in numbers(decoded, info):
            assert _acceptable(number), f"{route} accepted {path} = {number!r}"

    accepted()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"run_id": "r", "agent": "a", "budget_micro_usd": 1e23}', "budget_micro_usd"),
        (b'{"run_id": "r", "agent": "a", "budget_micro_usd": 100000000000000000000000}', None),
        (b'{"run_id": "r", "agent": "a", "replay_of": "s", "from_step": 1099511627776}', None),
        (b'{"run_id": "r", "agent": "a", "budget_micro_usd": 10000000000000001}', None),
    ],
)
def test_the_reproductions_do_not_decode(raw: bytes, field: str | None) -> None:
    from papayya.sdk.http import OpenRunBody

    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=OpenRunBody)


class _LongRun(Sequence[StepState]):
    """The steps of a run that has taken ``MAX_STEPS`` of them (without making a million)."""

    def __len__(self) -> int:
        return bounds.MAX_STEPS

    @overload
    def __getitem__(self, i: int) -> StepState: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[StepState]: ...
    def __getitem__(self, i: int | slice) -> StepState | Sequence[StepState]:
        if isinstance(i, slice):
            raise NotImplementedError
        n = i % bounds.MAX_STEPS
        return StepState(step_number=n, step_type="checkpoint", attempt=1, status="completed")


def test_a_run_takes_no_step_past_the_bound() -> None:
    """Step numbers are integer columns: the fold stops a run (any run, also one without
    max_steps, like the SDK's) before its step numbers could leave them."""
    state = fold([ev.RunQueued(run_id="r", project_id="p", agent_id="a"), ev.RunStarted(attempt=1)])
    next_step = ev.StepStarted(step_number=bounds.MAX_STEPS, step_type="checkpoint")
    with pytest.raises(StepLimitReached):
        check_folded(state, _LongRun(), next_step)
    with pytest.raises(InvalidEvent):  # and no event could carry a number past it
        ev.validate_event(ev.StepStarted(step_number=bounds.MAX_STEPS + 1, step_type="checkpoint"))
