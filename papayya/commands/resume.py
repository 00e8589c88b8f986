"""Resume a ``budget_exceeded`` run with higher limits: it is queued again and continues from
its last checkpoint (DESIGN §4). The fold refuses it (``IllegalTransition``, 409) unless the
run is ``budget_exceeded`` and the new limits exceed what it has spent or holds."""

from __future__ import annotations

from papayya.commands.owned import own
from papayya.domain import events as ev
from papayya.domain.state import RunState
from papayya.errors import InvalidInput
from papayya.money import cents_to_micro
from papayya.runs import Runs


async def resume_run(
    runs: Runs,
    project: str,
    run_id: str,
    *,
    budget_cents: int | None = None,
    budget_input_tokens: int | None = None,
    budget_output_tokens: int | None = None,
    budget_total_tokens: int | None = None,
) -> RunState:
    """Limits not given stay as they were; at least one must be given."""
    limits = (budget_cents, budget_input_tokens, budget_output_tokens, budget_total_tokens)
    if all(v is None for v in limits):
        raise InvalidInput("send a new budget: budget_cents or a token budget")
    resumed = ev.RunResumed(
        budget_micro_usd=cents_to_micro(budget_cents),
        budget_input_tokens=budget_input_tokens,
        budget_output_tokens=budget_output_tokens,
        budget_total_tokens=budget_total_tokens,
    )

    def decide(state: RunState) -> list[ev.RunEvent]:
        own(state, project, run_id)
        return [resumed]

    return await runs.execute(run_id, decide)
