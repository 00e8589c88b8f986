"""Hypothesis strategies for domain events and runs.

``events_of`` derives a strategy from any event class's msgspec type info, so a new event type
or field is covered by the round-trip tests without touching them. ``legal_runs`` is an
independent model of DESIGN §4/§6: it only ever draws events the run should accept.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import msgspec.inspect as mi
from hypothesis import strategies as st

from papayya.domain import events as ev
from papayya.domain.fold import apply, fold
from papayya.domain.state import RunState

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
timestamps = st.datetimes(timezones=st.just(UTC))


def _strategy(info: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(info, mi.IntType):
        high = 2**40 if info.le is None else min(info.le, 2**40)
        return st.integers(info.ge if info.ge is not None else -(2**53), high)
    if isinstance(info, mi.FloatType):
        low = info.ge if info.ge is not None else -1e9
        return st.floats(low, 1e9 if info.le is None else min(info.le, 1e9), allow_nan=False)
    if isinstance(info, mi.StrType):
        return st.text(min_size=info.min_length or 0, max_size=min(info.max_length or 20, 20))
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.NoneType):
        return st.none()
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(info.values)
    if isinstance(info, mi.UnionType):
        return st.one_of([_strategy(t) for t in info.types])
    if isinstance(info, mi.DateTimeType):
        return timestamps
    if isinstance(info, mi.DictType):
        return st.dictionaries(st.text(max_size=5), json_values, max_size=3)
    if isinstance(info, mi.VarTupleType):
        return st.lists(_strategy(info.item_type), max_size=3).map(tuple)
    if isinstance(info, mi.TupleType):
        return st.tuples(*(_strategy(t) for t in info.item_types))
    if isinstance(info, mi.AnyType):
        return json_values
    raise NotImplementedError(f"no strategy for {info!r}")


def events_of(cls: type[ev.Event]) -> st.SearchStrategy[ev.Event]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    fields = {f.name: _strategy(f.type) for f in info.fields}
    if cls is ev.RunQueued:
        # replayed_from and replay_from_step go together.
        link = st.none() | st.tuples(st.text(min_size=1, max_size=5), st.integers(0, 9))
        return st.builds(
            lambda fields, link: cls(
                **fields,
                replayed_from=link and link[0],
                replay_from_step=link and link[1],
            ),
            st.fixed_dictionaries(
                {k: v for k, v in fields.items() if k not in ("replayed_from", "replay_from_step")}
            ),
            link,
        )
    return st.builds(lambda kw: cls(**kw), st.fixed_dictionaries(fields))


any_event = st.one_of([events_of(cls) for cls in ev.EVENT_CLASSES])

RUN = dict(run_id="run-1", project_id="proj-1", agent_id="agent-1")


def queued(**kw: Any) -> ev.RunQueued:
    return ev.RunQueued(**{**RUN, **kw})


def llm(step: int, **kw: Any) -> ev.LlmCallRecorded:
    base: dict[str, Any] = dict(provider="openai", model="gpt-x", fingerprint=f"llm-{step}")
    return ev.LlmCallRecorded(step_number=step, **{**base, **kw})


def tool(step: int, **kw: Any) -> ev.ToolCallRecorded:
    return ev.ToolCallRecorded(step_number=step, **{"tool": "search", "fingerprint": "t", **kw})


Moves = list[tuple[int, st.SearchStrategy[ev.RunEvent]]]  # (weight, events)


def _moves(s: RunState) -> Moves:
    """Every kind of event the run must accept in state ``s`` (the test's own oracle), weighted
    so that runs make progress before they end."""
    moves: Moves = []
    if s.reservations:  # settling is always accepted, whatever the status
        settle = st.builds(
            lambda r, quarters: ev.BudgetSettled(
                reservation_id=r.reservation_id,
                actual_micro_usd=r.amount.micro_usd * quarters // 4,
                stale=quarters == 4,
            ),
            st.sampled_from(s.reservations),
            st.integers(0, 4),
        )
        moves.append((4, settle))
    if s.steps:  # spent money is always recorded, whatever the status
        moves.append((1, _llm_call(st.integers(0, len(s.steps) - 1))))
    if s.status in ("queued", "running"):
        moves += _ending_moves(s)
    if s.status == "queued":
        moves.append((12, st.just(ev.RunStarted(attempt=s.attempt + 1))))
    if s.status == "running":
        moves += _running_moves(s) + _step_moves(s) + _reservation(s)
    if s.status == "budget_exceeded":
        resume = st.builds(
            lambda extra: ev.RunResumed(
                budget_micro_usd=s.committed.micro_usd + s.reserved.micro_usd + extra
            ),
            st.integers(1, 500),
        )
        moves.append((8, resume))
    return moves


def _llm_call(steps: st.SearchStrategy[int]) -> st.SearchStrategy[ev.RunEvent]:
    return st.builds(
        lambda n, t, c: llm(n, input_tokens=t, cost_micro_usd=c),
        steps,
        st.integers(0, 50),
        st.integers(0, 50),
    )


def _ending_moves(s: RunState) -> Moves:
    moves: Moves = [
        (1, st.just(ev.RunFailed(code="boom", message="it broke"))),
        (1, st.just(ev.RunCancelled(reason="user"))),
        (1, st.just(ev.BudgetExceeded(message="no money", limit="usd"))),
    ]
    if not s.cancel_requested:
        moves.append((1, st.just(ev.CancelRequested(reason="user"))))
    return moves


def _running_moves(s: RunState) -> Moves:
    moves: Moves = [
        (1, st.just(ev.RunStarted(attempt=s.attempt + 1, worker="w2"))),  # recovery
        (1, st.just(ev.DivergenceDetected(step_number=max(0, s.next_step - 1)))),
    ]
    if s.in_flight is None:
        moves.append((2, st.builds(ev.RunCompleted, output=json_values)))
    if s.steps:
        last = s.steps[-1].step_number
        moves.append((4, st.builds(lambda fp: tool(last, fingerprint=fp), st.sampled_from("ab"))))
    return moves


def _step_moves(s: RunState) -> Moves:
    current = s.in_flight
    if current is None:
        if s.cancel_requested or (s.max_steps is not None and s.next_step >= s.max_steps):
            return []
        start = st.builds(
            lambda t: ev.StepStarted(step_number=s.next_step, step_type=t, label="L"),
            st.sampled_from(sorted(ev.STEP_TYPES)),
        )
        return [(12, start)]
    n = current.step_number
    moves: Moves = [
        (6, st.builds(ev.StepCompleted, step_number=st.just(n), output=json_values)),
        (2, st.just(ev.StepFailed(step_number=n, error_code="tool_error"))),
        (4, _llm_call(st.just(n))),
    ]
    if current.step_type == "checkpoint" and current.fingerprint is None:
        save = st.builds(
            lambda r: ev.CheckpointSaved(step_number=n, label="L", fingerprint="c", result=r),
            json_values,
        )
        moves.append((6, save))
    return moves


def _reservation(s: RunState) -> Moves:
    """A reservation that fits the budget, under an id that is not open."""
    limit = s.budget.micro_usd
    room = 200 if limit is None else limit - s.committed.micro_usd - s.reserved.micro_usd
    free = [f"res-{i}" for i in range(4) if s.reservation(f"res-{i}") is None]
    if not free or room < 0:
        return []
    reserve = st.builds(
        lambda rid, amount: ev.BudgetReserved(reservation_id=rid, amount_micro_usd=amount),
        st.sampled_from(free),
        st.integers(0, room),
    )
    return [(4, reserve)]


@st.composite
def legal_runs(
    draw: st.DrawFn, max_events: int = 40, budgeted: bool = False
) -> tuple[list[ev.RunEvent], RunState]:
    """A legal event sequence and the state after it, built with ``apply`` one event at a time."""
    budget = st.integers(0, 1000)
    first = queued(
        budget_micro_usd=draw(budget if budgeted else st.none() | budget),
        max_steps=draw(st.none() | st.integers(1, 6)),
    )
    events: list[ev.RunEvent] = [first]
    state = fold(events)
    for _ in range(draw(st.integers(0, max_events))):
        moves = _moves(state)
        over = state.is_terminal and state.status != "budget_exceeded"
        if not moves or (over and draw(st.booleans())):
            break
        weighted = [strategy for weight, strategy in moves for _ in range(weight)]
        event = draw(draw(st.sampled_from(weighted)))
        events.append(event)
        state = apply(state, event)
    return events, state
