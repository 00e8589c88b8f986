"""The wire structs the server and the SDK share: the durable checkpoints API's request bodies
and answers (``web/routes/durable.py`` serves them, ``papayya.sdk.http`` sends them), and the
size under which a result travels inline rather than as a payload reference.

The server decodes request bodies strictly (unknown fields are refused); the SDK decodes
answers ignoring fields it does not know yet, so an older SDK keeps working with a newer
server. Both import this module, so neither imports the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from papayya.domain.bounds import FromStep, MicroUsd, Millis, StepCount
from papayya.domain.events import StepType
from papayya.domain.state import RunStatus, StepStatus

# Results larger than this go to the payloads table; the event keeps a reference.
INLINE_RESULT_BYTES: Final = 4096

RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=150, pattern=r"^\S+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Message = Annotated[str, msgspec.Meta(max_length=4000)]


class OpenRunBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Create run ``run_id`` of ``agent``, or resume it if it exists. ``item_id`` and
    ``agent_version`` are kept in the run's metadata; ``replay_of`` + ``from_step`` link a new
    run to the run it replays. A new run without ``budget_micro_usd`` or ``max_steps`` gets
    its project's defaults (500 cents and 50 steps unless the project says otherwise)."""

    run_id: RunId
    agent: Name
    item_id: Name | None = None
    agent_version: Name | None = None
    input: Any = None
    metadata: dict[str, Any] | None = None
    budget_micro_usd: MicroUsd | None = None
    max_steps: StepCount | None = None
    replay_of: RunId | None = None
    from_step: FromStep | None = None


Tokens = Annotated[int, msgspec.Meta(ge=0, le=10**12)]
Short = Annotated[str, msgspec.Meta(max_length=200)]


class LlmUsage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A ``kind="llm"`` task's usage, as read from the provider response it returned (the
    published SDK's fields). ``None`` is "not reported", as distinct from zero tokens."""

    prompt_tokens: Tokens | None = None
    completion_tokens: Tokens | None = None
    total_tokens: Tokens | None = None
    model: Short | None = None
    stop_reason: Short | None = None
    provider_shape: Short = "unknown"


class CheckpointBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A finished task: its ``result``, or with ``error`` a task that raised (no result)."""

    label: Label
    duration_ms: Millis
    result: Any = None
    completed_at: datetime | None = None
    item_id: Name | None = None
    input_snapshot: Any = None
    output_snapshot: Any = None
    agent_version: Name | None = None
    error: Message | None = None
    # Set by the published SDK when it delivers a checkpoint it journaled during an outage:
    # how many times it tried, and when it gave up and journaled it. Kept with the step.
    delivery_attempts: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    journaled_at: datetime | None = None
    # ``run.task(..., kind="llm")``: the step wraps a model call, whose usage is kept with it.
    kind: Literal["llm"] | None = None
    llm: LlmUsage | None = None


class FinishRunBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """End the run: ``completed`` with ``output``, or ``failed`` with ``error`` (or, as the
    published SDK's ``fail(error)`` sends it, with the error as ``output``)."""

    status: Literal["completed", "failed"]
    output: Any = None
    error: Message | None = None
    error_code: Name | None = None


class DurableCheckpoint(msgspec.Struct, kw_only=True):
    """A task's step. ``result`` is always the value (a bulky one is stored apart, as
    ``result_ref``); ``status`` is ``failed``, with ``error``, for a task that raised."""

    label: str
    result: Any
    duration_ms: float
    completed_at: datetime | None
    item_id: str | None
    input_snapshot: Any
    output_snapshot: Any
    agent_version: str | None
    step_number: int
    attempt: int
    status: StepStatus
    error: str | None = None
    result_ref: str | None = None
    delivery_attempts: int | None = None
    journaled_at: datetime | None = None
    kind: str | None = None
    llm: dict[str, Any] | None = None  # LlmUsage's fields


class DurableStep(msgspec.Struct, kw_only=True):
    """One step of the run, of any type, without its result."""

    step_number: int
    step_type: StepType
    label: str | None
    status: StepStatus
    attempt: int
    fingerprint: str | None
    error_code: str | None
    error_message: str | None
    duration_ms: float
    started_at: datetime | None
    completed_at: datetime | None


class DurableRun(msgspec.Struct, kw_only=True):
    """A run as the SDK resumes it: ``checkpoints`` are its completed tasks (the recording,
    results included), ``steps`` every step in order (failed and interrupted ones too).
    ``run_id`` is the client's id, scoped to its project; ``id`` is the run's id in the rest
    of the API (``/v1/runs/{id}``, its events, the dashboard)."""

    run_id: str
    project_id: str
    agent: str
    status: RunStatus
    attempt: int
    item_id: str | None
    agent_version: str | None
    trigger: str
    input: Any
    output: Any
    output_ref: str | None
    error_code: str | None
    error_message: str | None
    replayed_from: str | None
    replay_from_step: int | None
    metadata: dict[str, Any]
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime | None
    checkpoints: list[DurableCheckpoint]
    steps: list[DurableStep]
    id: str | None = None  # None from servers older than scoped ids
    # Given only by an open: the run token of this run's attempt, with which the SDK sends
    # model calls through the server's gateway (metered there, with the server's keys).
    run_token: str | None = None


class Empty(msgspec.Struct, forbid_unknown_fields=True):
    """A request with nothing to say (a heartbeat)."""


EMPTY: Final = Empty()


class HeartbeatAck(msgspec.Struct):
    """The answer to a heartbeat: whether the run was asked to stop."""

    run_id: str
    attempt: int
    cancel_requested: bool


class CostBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A cost the SDK cannot see (``run.record_cost``), recorded as a step under ``label``;
    posting the same label again in the same attempt records nothing more."""

    label: Label
    cost_micro_usd: Annotated[int, msgspec.Meta(ge=0, le=10**12)]
