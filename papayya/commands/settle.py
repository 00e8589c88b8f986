"""Record the settlement of an attempt's model calls when the attempt ends.

The meter (``papayya.metering``) settles each call it makes, exactly once, as the call ends
(``charge``). What is left to a command is the settlement of calls nobody will settle: those
in flight when an attempt was lost, which the next attempt must not start before (DESIGN §5,
``papayya.domain.handover``), and those of a crashed local process, settled at their
reservation when the run is opened again (``commands.durable``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from papayya.domain import events as ev
from papayya.domain.handover import handover
from papayya.domain.state import RunState
from papayya.runs import Runs


async def end_attempt(
    runs: Runs,
    run_id: str,
    outcome: Callable[[RunState], Sequence[ev.RunEvent]],
    wait: float,
    before: Sequence[ev.RunEvent] = (),
) -> bool:
    """Append ``before`` and what ``outcome`` makes of the run (how an attempt ended),
    preceded by the stale settlements it needs; ``False`` (nothing appended) while calls of
    the lost attempt are still in flight at a gateway and must be waited for."""
    waiting = False

    def decide(state: RunState) -> list[ev.RunEvent]:
        nonlocal waiting
        ending = handover(state, outcome(state), datetime.now(UTC), wait)
        waiting = ending is None
        return [] if ending is None else [*before, *ending]

    await runs.execute(run_id, decide)
    return not waiting
