"""When a lost attempt may hand its run to the next one (DESIGN §5, §8). Pure: no I/O, no clock.

An attempt whose agent or worker is gone may still have model calls in flight at the gateway
(open reservations): the provider is answering them and the gateway records each one as a step
once it settles. The next attempt is answered from that recording, so it must not start before
the recording exists, or it makes the same call again live and the provider sees it twice. So
whoever ends an attempt as lost (``AttemptLost``: the worker, or the sweeper) waits until the
attempt's reservations have settled, and only after ``wait`` seconds, when the call can no longer
be alive at any gateway, settles them at their reservation (``stale``) itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from papayya.domain import events as ev
from papayya.domain.state import Reservation, RunState

# The longest a model call may take at the gateway, first byte to last (its upstream timeout).
# A reservation open for longer belongs to a call no gateway still holds: nobody will settle it.
CALL_TIMEOUT_SECONDS: Final = 600.0
# How long a lost attempt waits for its calls in flight before settling them itself.
SETTLE_WAIT_SECONDS: Final = CALL_TIMEOUT_SECONDS


def settled_in_full(held: Sequence[Reservation]) -> list[ev.BudgetSettled]:
    """Settle reservations whose calls nobody will settle (their gateway or process is gone)
    at their reserved amounts: the worst case each was admitted with."""
    return [
        ev.BudgetSettled(
            reservation_id=r.reservation_id,
            actual_micro_usd=r.amount.micro_usd,
            input_tokens=r.amount.input_tokens,
            output_tokens=r.amount.output_tokens,
            stale=True,
            usage_estimated=True,
        )
        for r in held
    ]


def handover(
    state: RunState, events: Sequence[ev.RunEvent], now: datetime, wait: float
) -> list[ev.RunEvent] | None:
    """``events`` (what ends an attempt), preceded by the stale settlements they need, or
    ``None`` while they must wait for calls in flight. Only ``AttemptLost`` waits: a run that
    ends for good starts no attempt that could repeat a call."""
    if not state.reservations or not any(isinstance(e, ev.AttemptLost) for e in events):
        return list(events)
    for held in state.reservations:
        # (A reservation of unknown age cannot be waited for: it counts as due.)
        if held.reserved_at is not None and (now - held.reserved_at).total_seconds() < wait:
            return None
    return [*settled_in_full(state.reservations), *events]
