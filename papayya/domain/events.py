"""Domain events: frozen, tagged msgspec Structs, and their mapping to event-store rows.

The tag (the class name) is the store's ``event_type``; the other fields are its ``data``.
Stored events never change meaning: evolve them by adding fields with defaults, or new types.
Unknown fields are ignored on decode so that older code can read newer events.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, TypeAlias

import msgspec

from eventstore.types import NewEvent, RecordedEvent
from papayya.domain.bounds import (
    MAX_STEPS,
    Millis,
    StoredAttempt,
    StoredCount,
    StoredStep,
    TimeoutSeconds,
)
from papayya.errors import InvalidEvent

StepType: TypeAlias = Literal["tool_call", "response", "checkpoint", "error"]
STEP_TYPES: Final = frozenset(("tool_call", "response", "checkpoint", "error"))

# Every number an event carries fits the read-model column it is projected into
# (papayya.domain.bounds): a valid event can always be projected.
Count = StoredCount
Step = StoredStep
Attempt = StoredAttempt
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
# Room for a 200-character task label and its "#n" repeat suffix.
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    omit_defaults=True,
    forbid_unknown_fields=False,
):
    """Base of every domain event. ``at`` is when it happened, if the writer knows better than
    the store's ``recorded_at`` (``from_recorded`` fills it from there otherwise)."""

    at: datetime | None = None


class AgentDefined(Event, frozen=True):
    """An agent was created or redefined (stream ``agent-<id>``)."""

    agent_id: Name
    project_id: Name
    name: Name
    slug: Name
    description: str | None = None
    config: dict[str, Any] = {}


class RunEvent(Event, frozen=True):
    """Base of the events of a run's stream (``run-<id>``), the input of ``fold``."""


class RunQueued(RunEvent, frozen=True):
    """The run exists and waits for a worker. Budgets of ``None`` mean no limit."""

    run_id: Name
    project_id: Name
    agent_id: Name
    input: Any = None
    budget_micro_usd: Count | None = None
    budget_input_tokens: Count | None = None
    budget_output_tokens: Count | None = None
    budget_total_tokens: Count | None = None
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=MAX_STEPS)] | None = None
    trigger: str = "api"
    idempotency_key: str | None = None
    callback_url: str | None = None
    replayed_from: str | None = None
    replay_from_step: Step | None = None
    deployment_version: str | None = None
    metadata: dict[str, Any] = {}
    # The same tool with the same arguments this many times in a row fails the run.
    loop_threshold: Annotated[int, msgspec.Meta(ge=2)] | None = None
    # The run's time limit as resolved when it was queued (the run's, the agent's, the
    # project's default); ``None`` (runs queued before limits existed): the 1 h default.
    timeout_seconds: TimeoutSeconds | None = None

    def __post_init__(self) -> None:
        # Also runs on decode, so a stored replay link is always complete.
        if (self.replayed_from is None) != (self.replay_from_step is None):
            raise InvalidEvent("replayed_from and replay_from_step go together")


class RunStarted(RunEvent, frozen=True):
    """A worker started attempt ``attempt`` (1, 2, …). A later attempt on a running run is a
    recovery after a crash: the step in flight is abandoned and runs again as a new step."""

    attempt: Attempt
    worker: str | None = None


class StepStarted(RunEvent, frozen=True):
    """Step ``step_number`` began; steps are numbered 0, 1, … without gaps, one at a time."""

    step_number: Step
    step_type: StepType
    label: Label | None = None
    # A replay's step before its from_step, copied from its source when it was queued: its
    # calls are answered from that recording (DESIGN §5), so the replay keeps the numbering.
    replayed: bool = False


class StepCompleted(RunEvent, frozen=True):
    """The step in flight ended well; ``output_ref`` names a payload when the output is bulky."""

    step_number: Step
    duration_ms: Millis = 0.0
    output: Any = None
    output_ref: str | None = None


class StepFailed(RunEvent, frozen=True):
    """The step in flight ended in an error; the run goes on unless a run event ends it."""

    step_number: Step
    error_code: Name
    error_message: str = ""
    duration_ms: Millis = 0.0


class LlmCallRecorded(RunEvent, frozen=True):
    """One model call (never one per token). Token buckets are disjoint: ``input_tokens`` is
    uncached input only, ``output_tokens`` excludes ``reasoning_tokens``."""

    step_number: Step
    provider: Name
    model: Name
    fingerprint: Name
    input_tokens: Count = 0
    cached_input_tokens: Count = 0
    cache_write_tokens: Count = 0
    output_tokens: Count = 0
    reasoning_tokens: Count = 0
    cost_micro_usd: Count = 0
    price_version: str | None = None
    request_ref: str | None = None
    response_ref: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    error: str | None = None
    duration_ms: Millis = 0.0
    ttft_ms: Millis | None = None
    # Answered from a recording (a resume or a replay): no provider call, no cost.
    replayed: bool = False
    # The provider's usage never arrived (a stream cut short, a timeout): the counts and cost
    # are the call's reservation, the worst case it was admitted with.
    usage_estimated: bool = False
    # The provider reported more than was reserved; the counts are what it reported.
    over_reservation: bool = False
    # The budget lowered (or set) the output cap the provider was sent to this many tokens.
    output_capped: Count | None = None


class ToolCallRecorded(RunEvent, frozen=True):
    """A tool ran; it belongs to the latest step (usually the ``tool_call`` step that asked)."""

    step_number: Step
    tool: Name
    fingerprint: Name
    call_id: str | None = None
    input: Any = None
    input_ref: str | None = None
    output: Any = None
    output_ref: str | None = None
    error: str | None = None
    duration_ms: Millis = 0.0


class CheckpointSaved(RunEvent, frozen=True):
    """The result of a ``run.task``, recorded inside its ``checkpoint`` step. Steps do not nest,
    so a task's step is written once its result is known (``StepStarted``, ``CheckpointSaved``
    and ``StepCompleted`` in one append) and model calls made inside the task come before it."""

    step_number: Step
    label: Label
    fingerprint: Name
    result: Any = None
    result_ref: str | None = None
    duration_ms: Millis = 0.0


class BudgetReserved(RunEvent, frozen=True):
    """Worst-case cost and tokens held before a provider call."""

    reservation_id: Name
    amount_micro_usd: Count
    input_tokens: Count = 0
    output_tokens: Count = 0
    step_number: Step | None = None


class BudgetSettled(RunEvent, frozen=True):
    """Actual usage of a reservation; ``stale`` when the sweeper settled it at the reserved
    amount. Input tokens count every input bucket, output tokens include reasoning.
    ``usage_estimated``: no usage arrived, so the reservation itself was counted;
    ``over_reservation``: the provider reported more than was reserved."""

    reservation_id: Name
    actual_micro_usd: Count
    input_tokens: Count = 0
    output_tokens: Count = 0
    stale: bool = False
    usage_estimated: bool = False
    over_reservation: bool = False


class CancelRequested(RunEvent, frozen=True):
    """Someone asked to stop the run; no step may start until it ends."""

    reason: str | None = None


class DivergenceDetected(RunEvent, frozen=True):
    """Re-executed code stopped matching the recording at ``step_number``; it runs live."""

    step_number: Step
    expected_fingerprint: str | None = None
    actual_fingerprint: str | None = None


class RunCompleted(RunEvent, frozen=True):
    """The agent returned; no step may be in flight."""

    output: Any = None
    output_ref: str | None = None


class RunFailed(RunEvent, frozen=True):
    """The run failed (``max_steps_exceeded``, ``loop_detected``, ``worker_lost``, …)."""

    code: Name
    message: str = ""


class RunCancelled(RunEvent, frozen=True):
    """The run stopped on request (a queued run is cancelled without a worker)."""

    reason: str | None = None


class BudgetExceeded(RunEvent, frozen=True):
    """A call was refused for budget; ``limit`` names the limit (``usd``, ``input_tokens``…)."""

    message: str = ""
    limit: str | None = None


class RunResumed(RunEvent, frozen=True):
    """A ``budget_exceeded`` run is queued again; budgets of ``None`` stay as they were."""

    reason: str = "budget_topup"
    budget_micro_usd: Count | None = None
    budget_input_tokens: Count | None = None
    budget_output_tokens: Count | None = None
    budget_total_tokens: Count | None = None


class AttemptLost(RunEvent, frozen=True):
    """The worker running ``attempt`` is gone (its lease expired) or let the run go (it shut
    down): the step in flight is interrupted and the run is queued again for a new attempt,
    which resumes from its recording (DESIGN §5, §8)."""

    attempt: Attempt
    reason: Name = "lease_expired"
    worker: str | None = None


class CallbackAttempted(RunEvent, frozen=True):
    """One POST of the run's summary to its ``callback_url`` after a terminal status."""

    url: str
    attempt: Attempt
    delivered: bool
    status_code: int | None = None
    error: str | None = None
    webhook_id: str | None = None
    final: bool = False


class AgentOutput(RunEvent, frozen=True):
    """What an attempt's agent wrote to stdout and stderr (bounded per attempt), each line
    with the Unix time it was read: the run's container log. The worker records it while the
    attempt runs, new lines every few seconds (``final`` false), and the rest as the attempt
    ends (``final``: the attempt's output is all there). An event written before output was
    recorded live is an attempt's only one, and final."""

    attempt: Attempt
    lines: tuple[tuple[float, str], ...] = ()
    truncated: bool = False
    final: bool = True


class DeploymentCreated(Event, frozen=True):
    """A deployable version of an agent (stream ``deployment-<id>``): a module the
    ``process`` runtime starts, or a bundle that becomes a ``docker`` image."""

    deployment_id: Name
    project_id: Name
    agent_id: Name
    version: Annotated[int, msgspec.Meta(ge=1)]
    runtime: Literal["process", "docker"]
    entrypoint: str
    agent_function: str | None = None
    source: str | None = None
    bundle_sha256: str | None = None


class DeploymentReady(Event, frozen=True):
    deployment_id: Name
    image: str | None = None


class DeploymentFailed(Event, frozen=True):
    deployment_id: Name
    error: str = ""


EVENT_CLASSES: Final[tuple[type[Event], ...]] = (
    AgentDefined,
    RunQueued,
    RunStarted,
    StepStarted,
    StepCompleted,
    StepFailed,
    LlmCallRecorded,
    ToolCallRecorded,
    CheckpointSaved,
    BudgetReserved,
    BudgetSettled,
    CancelRequested,
    DivergenceDetected,
    RunCompleted,
    RunFailed,
    RunCancelled,
    BudgetExceeded,
    RunResumed,
    AttemptLost,
    CallbackAttempted,
    AgentOutput,
    DeploymentCreated,
    DeploymentReady,
    DeploymentFailed,
)
EVENT_TYPES: Final[Mapping[str, type[Event]]] = MappingProxyType(
    {cls.__name__: cls for cls in EVENT_CLASSES}
)
# The one union every stored event decodes through; msgspec dispatches on the "type" tag.
AnyEvent: TypeAlias = (
    AgentDefined
    | RunQueued
    | RunStarted
    | StepStarted
    | StepCompleted
    | StepFailed
    | LlmCallRecorded
    | ToolCallRecorded
    | CheckpointSaved
    | BudgetReserved
    | BudgetSettled
    | CancelRequested
    | DivergenceDetected
    | RunCompleted
    | RunFailed
    | RunCancelled
    | BudgetExceeded
    | RunResumed
    | AttemptLost
    | CallbackAttempted
    | AgentOutput
    | DeploymentCreated
    | DeploymentReady
    | DeploymentFailed
)
EVENT_DECODER: Final = msgspec.json.Decoder(AnyEvent)
_json_encoder = msgspec.json.Encoder()


def validate_event(event: Event) -> None:
    """Raise ``InvalidEvent`` unless ``event`` is serialisable and within its field constraints
    (msgspec checks constraints on decode only, so a constructed event is checked here)."""
    _encode_checked(event)


def encode_event(event: Event) -> tuple[str, dict[str, Any]]:
    """``(event_type, data)`` for the store: the tag and the JSON fields without the tag."""
    data = msgspec.json.decode(_encode_checked(event))
    del data["type"]
    return type(event).__name__, data


def decode_event(event_type: str, data: Mapping[str, Any]) -> Event:
    """The event stored as ``event_type`` with ``data``; ``InvalidEvent`` if it is not one."""
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise InvalidEvent(f"unknown event type {event_type!r}")
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"{event_type} data must be a JSON object")
    # The tag is a column of its own here, so dispatch on it directly: converting to the union
    # would resolve the union again on every call (about 40 times slower).
    try:
        return msgspec.convert(data, EVENT_TYPES[event_type])
    except (msgspec.ValidationError, UnicodeError) as exc:  # UnicodeError: a lone surrogate
        raise InvalidEvent(f"{event_type}: {exc}") from None


def decode_event_json(raw: bytes | str) -> Event:
    """An event from tagged JSON (``{"type": "RunStarted", …}``), through the union decoder."""
    if not isinstance(raw, bytes | str):
        raise InvalidEvent("an event in JSON must be bytes or str")
    try:
        event: Event = EVENT_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeError) as exc:  # also: not UTF-8, a lone surrogate
        raise InvalidEvent(f"not a known event: {exc}") from None
    return event


def to_new_event(
    event: Event,
    *,
    event_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
) -> NewEvent:
    """The ``NewEvent`` to append for ``event``."""
    event_type, data = encode_event(event)
    return NewEvent(type=event_type, data=data, metadata=metadata, event_id=event_id)


def from_recorded(recorded: RecordedEvent) -> Event:
    """The domain event of a stored row, with ``at`` taken from ``recorded_at`` if unset."""
    if not isinstance(recorded, RecordedEvent):
        raise InvalidEvent("expected a RecordedEvent")
    event = decode_event(recorded.event_type, recorded.data)
    if event.at is None:
        event = msgspec.structs.replace(event, at=recorded.recorded_at)
    return event


def _encode_checked(event: Event) -> bytes:
    name = type(event).__name__
    if EVENT_TYPES.get(name) is not type(event):  # the bases Event, RunEvent are not stored
        raise InvalidEvent(f"expected a domain event, got {name}")
    try:
        raw = _json_encoder.encode(event)
        msgspec.json.decode(raw, type=type(event))
    except (TypeError, ValueError, OverflowError) as exc:
        # msgspec.ValidationError is a ValueError: a field breaks its constraint.
        raise InvalidEvent(f"{name}: {exc}") from None
    return raw


def decode_stored(event_type: str, data: str | bytes, recorded_at: datetime) -> Event:
    """An event straight from its stored JSON (no intermediate dict), with ``at`` filled from
    ``recorded_at`` when unset: the fast path for folding long streams."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidEvent(f"unknown event type {event_type!r}")
    try:
        event = msgspec.json.decode(data, type=cls)
    except (msgspec.DecodeError, UnicodeError) as exc:  # also: not UTF-8, a lone surrogate
        raise InvalidEvent(f"{event_type}: {exc}") from None
    if event.at is None:
        event = msgspec.structs.replace(event, at=recorded_at)
    return event
