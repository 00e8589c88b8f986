"""The folded state of a run: what ``fold`` produces and what ``check`` judges events against."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import msgspec

from papayya.domain.events import LlmCallRecorded, StepType

RunStatus: TypeAlias = Literal[
    "queued", "running", "completed", "failed", "cancelled", "budget_exceeded"
]
StepStatus: TypeAlias = Literal["running", "completed", "failed"]
TERMINAL: Final = frozenset(("completed", "failed", "cancelled", "budget_exceeded"))
# The error code of a step that was in flight when its attempt ended by a crash.
INTERRUPTED: Final = "interrupted"


class Usage(msgspec.Struct, frozen=True):
    """Tokens in disjoint buckets and their cost, summed over model calls."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_micro_usd: int = 0

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def total_output_tokens(self) -> int:
        return self.output_tokens + self.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.total_output_tokens

    def plus(self, call: LlmCallRecorded) -> Usage:
        return Usage(
            self.input_tokens + call.input_tokens,
            self.cached_input_tokens + call.cached_input_tokens,
            self.cache_write_tokens + call.cache_write_tokens,
            self.output_tokens + call.output_tokens,
            self.reasoning_tokens + call.reasoning_tokens,
            self.cost_micro_usd + call.cost_micro_usd,
        )


class Amount(msgspec.Struct, frozen=True):
    """Money and tokens counted against a budget (input: all input buckets; output: with
    reasoning)."""

    micro_usd: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.micro_usd + other.micro_usd,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
        )

    def __sub__(self, other: Amount) -> Amount:
        return Amount(
            self.micro_usd - other.micro_usd,
            self.input_tokens - other.input_tokens,
            self.output_tokens - other.output_tokens,
        )


class Budget(msgspec.Struct, frozen=True):
    """A run's limits; ``None`` is no limit."""

    micro_usd: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None

    def exceeded_by(self, amount: Amount) -> str | None:
        """The name of the first limit that ``amount`` would exceed, else ``None``."""
        for name, limit, used in (
            ("usd", self.micro_usd, amount.micro_usd),
            ("input_tokens", self.input_tokens, amount.input_tokens),
            ("output_tokens", self.output_tokens, amount.output_tokens),
            ("total_tokens", self.total_tokens, amount.total_tokens),
        ):
            if limit is not None and used > limit:
                return name
        return None


class Reservation(msgspec.Struct, frozen=True):
    """An open (not yet settled) budget reservation."""

    reservation_id: str
    amount: Amount
    step_number: int | None = None
    # When it was taken: a lost attempt waits this long at most for its calls to settle.
    reserved_at: datetime | None = None


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    tool: str
    fingerprint: str
    call_id: str | None = None
    input: Any = None
    input_ref: str | None = None
    output: Any = None
    output_ref: str | None = None
    error: str | None = None
    duration_ms: float = 0.0


class StepState(msgspec.Struct, frozen=True, kw_only=True):
    """One step. ``usage`` sums its model calls; ``requested_tools`` are the tool calls the
    model asked for, ``tool_calls`` the ones that ran; ``fingerprint`` is that of its task for
    a ``checkpoint`` step, else of its last model call."""

    step_number: int
    step_type: StepType
    attempt: int
    label: str | None = None
    status: StepStatus = "running"
    provider: str | None = None
    model: str | None = None
    usage: Usage = Usage()
    llm_calls: int = 0
    requested_tools: tuple[dict[str, Any], ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    fingerprint: str | None = None
    output: Any = None
    output_ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    duration_ms: float = 0.0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # A model call of the step was counted at its reservation (its usage never arrived), or
    # above it (the provider reported more); ``output_capped``: the budget capped its output.
    usage_estimated: bool = False
    over_reservation: bool = False
    output_capped: int | None = None
    # Copied from a replay's source: answered from the recording, not run again.
    replayed: bool = False


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    """A run as of its ``version``-th event.

    ``attempt`` is the latest started attempt (0 before the first start). ``usage`` is what the
    run's model calls cost; ``committed`` is what settled reservations count against the budget
    and ``reserved`` what open ones hold. ``tool_repeats`` counts how many tool calls in a row
    had ``last_tool_fingerprint`` (loop detection).
    """

    run_id: str
    project_id: str
    agent_id: str
    status: RunStatus
    version: int = 0
    input: Any = None
    output: Any = None
    output_ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempt: int = 0
    steps: tuple[StepState, ...] = ()
    usage: Usage = Usage()
    llm_calls: int = 0
    budget: Budget = Budget()
    max_steps: int | None = None
    loop_threshold: int | None = None
    reserved: Amount = Amount()
    committed: Amount = Amount()
    reservations: tuple[Reservation, ...] = ()
    cancel_requested: bool = False
    cancel_reason: str | None = None
    trigger: str = "api"
    idempotency_key: str | None = None
    callback_url: str | None = None
    deployment_version: str | None = None
    metadata: dict[str, Any] = {}
    replayed_from: str | None = None
    replay_from_step: int | None = None
    diverged_at_step: int | None = None
    last_tool_fingerprint: str | None = None
    tool_repeats: int = 0
    # Attempts lost with their worker and queued again (AttemptLost).
    recoveries: int = 0
    # The callback's delivery: "retrying", "delivered" or "failed" (None: none attempted).
    callback_status: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # The time limit recorded at queueing (None: the default) and when it started counting:
    # the run's first start, again at the first start after a resume (papayya.domain.timelimit).
    timeout_seconds: int | None = None
    clock_started_at: datetime | None = None

    @property
    def next_step(self) -> int:
        """The number the next ``StepStarted`` must carry: steps are numbered 0, 1, …"""
        return len(self.steps)

    @property
    def in_flight(self) -> StepState | None:
        """The step that started and has not ended, if any (always the last one)."""
        return in_flight(self.steps)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def reservation(self, reservation_id: str) -> Reservation | None:
        return next((r for r in self.reservations if r.reservation_id == reservation_id), None)


def in_flight(steps: Sequence[StepState]) -> StepState | None:
    """The running step of ``steps``; only the last step can be running."""
    if steps and steps[-1].status == "running":
        return steps[-1]
    return None
