"""A cost the SDK cannot see (a paid search API, say), recorded by ``run.record_cost``.

It is a step of its own, a checkpoint under the caller's label whose result is the amount,
so that a resumed run answers it from the recording instead of counting it twice; and a
reservation settled at once at that amount, so that it counts against the run's budget like a
model call. A cost that spends the budget ends the run ``budget_exceeded``.
"""

from __future__ import annotations

from papayya.budget import exhausted
from papayya.domain import events as ev
from papayya.domain.state import Amount, RunState
from papayya.errors import Conflict, InvalidInput
from papayya.money import usd_string

MAX_COST_MICRO_USD = 10**12  # a million dollars: anything more is a mistake


def cost_events(state: RunState, label: str, fingerprint: str, micro_usd: int) -> list[ev.RunEvent]:
    """What recording ``micro_usd`` under ``label`` appends to the running ``state``."""
    if not 0 <= micro_usd <= MAX_COST_MICRO_USD:
        raise InvalidInput(f"a cost is between 0 and {usd_string(MAX_COST_MICRO_USD)} USD")
    if state.status != "running" or state.cancel_requested:
        raise Conflict(f"run {state.run_id} is {state.status}; it records no new steps")
    n = state.next_step
    reservation = f"cost-{state.attempt}-{n}"
    # The money is spent already: what the budget cannot hold is reserved up to what is left
    # and settled in full (``over_reservation``), as a model call that used more than held.
    held = state.committed + state.reserved
    left = micro_usd
    if state.budget.micro_usd is not None:
        left = max(0, min(micro_usd, state.budget.micro_usd - held.micro_usd))
    events: list[ev.RunEvent] = [
        ev.StepStarted(step_number=n, step_type="checkpoint", label=label),
        ev.CheckpointSaved(
            step_number=n,
            label=label,
            fingerprint=fingerprint,
            result={"cost_usd": usd_string(micro_usd)},
        ),
        ev.StepCompleted(step_number=n),
        ev.BudgetReserved(reservation_id=reservation, amount_micro_usd=left, step_number=n),
        ev.BudgetSettled(
            reservation_id=reservation,
            actual_micro_usd=micro_usd,
            over_reservation=left < micro_usd,
        ),
    ]
    limit = exhausted(state.budget, state.committed + Amount(micro_usd=micro_usd))
    if limit is not None:
        message = f"the run's {limit} budget is spent (a cost of {usd_string(micro_usd)} USD)"
        events.append(ev.BudgetExceeded(message=message, limit=limit))
    return events
