"""What the dashboard shows inside a run: one step in full (model requests and responses,
tool calls, checkpoint result, its events) and the run's timeline markers (attempts started
and lost, divergence, cancel, budget, resume, end, callbacks).

Both fold nothing new: they read the run's events and pick what belongs where. Bulky content
lives in the payload table (DESIGN §3); only refs named by this run's own events are read, so
the project check on the run covers its payloads too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from papayya.domain import events as ev
from papayya.domain.attach import requesting_step
from papayya.domain.fold import fold
from papayya.domain.state import StepState
from papayya.errors import NotFound, RunNotFound
from papayya.models import StepOut, step_out
from papayya.money import usd_string
from papayya.runs import MAX_RUN_ID
from web import http, keys
from web.openapi import api

# Larger payloads are cut to this many bytes of text, so a page never loads megabytes.
MAX_SHOWN: Final = 256 * 1024
LOG_SLACK_SECONDS: Final = 1.0
_decode = msgspec.json.decode


class PayloadOut(msgspec.Struct):
    """Stored content: decoded JSON when it is JSON, else text (cut at 256 KiB, ``truncated``)."""

    ref: str
    size: int
    truncated: bool
    content: Any


class LlmCallOut(msgspec.Struct, kw_only=True):
    provider: str
    model: str
    fingerprint: str
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: str
    duration_ms: float
    ttft_ms: float | None
    replayed: bool
    error: str | None
    tool_calls: list[dict[str, Any]]
    request: PayloadOut | None
    response: PayloadOut | None
    at: datetime | None
    usage_estimated: bool = False
    over_reservation: bool = False
    output_capped: int | None = None


class ToolCallDetail(msgspec.Struct, kw_only=True):
    tool: str
    call_id: str | None
    input: Any
    output: Any
    error: str | None
    duration_ms: float
    at: datetime | None


class CheckpointOut(msgspec.Struct, kw_only=True):
    label: str
    fingerprint: str
    result: Any
    duration_ms: float


class EventOut(msgspec.Struct, kw_only=True):
    type: str
    at: datetime | None
    detail: str


class LogLine(msgspec.Struct):
    """A line the agent wrote (stdout or stderr), with when the worker read it."""

    at: datetime
    attempt: int
    text: str


class StepDetail(msgspec.Struct, kw_only=True):
    step: StepOut
    llm_calls: list[LlmCallOut]
    tool_calls: list[ToolCallDetail]
    checkpoint: CheckpointOut | None
    events: list[EventOut]
    # The agent's output while the step ran (its container log), from AgentOutput events.
    log: list[LogLine] = []


class Marker(msgspec.Struct, kw_only=True):
    """A run-level event. ``kind``: queued, started, recovery, divergence, cancel, budget,
    resumed, ended or callback; ``step`` is the step it came before (the next step's number)."""

    kind: str
    type: str
    at: datetime | None
    step: int
    attempt: int | None
    detail: str


class Timeline(msgspec.Struct):
    data: list[Marker]


def _run_id(request: web.Request) -> str:
    run_id = http.path_id(request)
    if len(run_id) > MAX_RUN_ID or any(ch.isspace() or not ch.isprintable() for ch in run_id):
        raise RunNotFound(f"run {run_id} not found")
    return run_id


async def _events(request: web.Request) -> tuple[str, list[ev.RunEvent]]:
    """The run's events; another project's run answers exactly like a missing one."""
    run_id = _run_id(request)
    events = await request.app[keys.RUNS].events(run_id)
    first = events[0]
    if not isinstance(first, ev.RunQueued) or first.project_id != http.project_id(request):
        raise RunNotFound(f"run {run_id} not found")
    return run_id, events


# -- one step -------------------------------------------------------------------------------


def payload_out(ref: str, content: bytes) -> PayloadOut:
    if len(content) <= MAX_SHOWN:
        try:
            return PayloadOut(ref, len(content), False, _decode(content))
        except msgspec.DecodeError:
            pass
    text = content[:MAX_SHOWN].decode("utf-8", errors="replace")
    return PayloadOut(ref, len(content), len(content) > MAX_SHOWN, text)


async def _payloads(request: web.Request, refs: set[str]) -> dict[str, PayloadOut]:
    store = request.app[keys.STORE]

    async def one(ref: str) -> PayloadOut | None:
        try:
            return payload_out(ref, await store.get_payload(ref))
        except NotFound:  # recorded but never stored (a crash between the two): show none
            return None

    found = await asyncio.gather(*(one(ref) for ref in sorted(refs)))
    return {ref: p for ref, p in zip(sorted(refs), found, strict=True) if p is not None}


def _content(value: Any, ref: str | None, payloads: dict[str, PayloadOut]) -> Any:
    """An inline value, or the content its ref names."""
    if ref is None:
        return value
    payload = payloads.get(ref)
    return None if payload is None else payload.content


def describe(event: ev.RunEvent) -> str:
    """One line about an event, for timelines."""
    match event:
        case ev.StepStarted():
            return f"{event.step_type} step started" + (f": {event.label}" if event.label else "")
        case ev.StepCompleted():
            return f"completed in {event.duration_ms:.0f} ms"
        case ev.StepFailed():
            return f"{event.error_code}: {event.error_message}".strip(": ")
        case ev.LlmCallRecorded():
            how = "from the recording" if event.replayed else f"${usd_string(event.cost_micro_usd)}"
            return f"{event.provider} {event.model} ({how})" + (
                f", error: {event.error}" if event.error else ""
            )
        case ev.ToolCallRecorded():
            return f"tool {event.tool}" + (f", error: {event.error}" if event.error else "")
        case ev.CheckpointSaved():
            return f"task {event.label} saved"
        case ev.BudgetReserved():
            return f"reserved ${usd_string(event.amount_micro_usd)}"
        case ev.BudgetSettled():
            notes = [
                note
                for note, on in (
                    ("stale", event.stale),
                    ("usage never arrived: counted at the reservation", event.usage_estimated),
                    ("above the reservation", event.over_reservation),
                )
                if on
            ]
            return f"settled ${usd_string(event.actual_micro_usd)}" + (
                f" ({'; '.join(notes)})" if notes else ""
            )
        case ev.DivergenceDetected():
            return "the code stopped matching the recording here; it runs live from now on"
        case _:
            return ""


def _belongs(
    event: ev.RunEvent, number: int, reservations: set[str], steps: Sequence[StepState]
) -> bool:
    if isinstance(event, ev.ToolCallRecorded):  # under the step that asked for it, as folded
        at = event.step_number
        return requesting_step(steps, at, event.tool, event.fingerprint, event.call_id) == number
    if getattr(event, "step_number", None) == number:
        return True
    return isinstance(event, ev.BudgetSettled) and event.reservation_id in reservations


@api.route(
    "GET", "/v1/runs/{id}/steps/{n}",
    "One step in full: model requests and responses, tool calls, checkpoint result, events",
    response=StepDetail, tag="runs",
)  # fmt: skip
async def step_detail(request: web.Request) -> web.Response:
    raw = request.match_info["n"]
    run_id, events = await _events(request)
    state = fold(events)
    if not (raw.isascii() and raw.isdigit() and len(raw) < 10) or int(raw) >= len(state.steps):
        raise NotFound(f"run {run_id} has no step {raw}")
    number = int(raw)
    reservations = {
        e.reservation_id
        for e in events
        if isinstance(e, ev.BudgetReserved) and e.step_number == number
    }
    mine = [e for e in events if _belongs(e, number, reservations, state.steps)]
    payloads = await _payloads(request, _refs(mine))
    return http.json(
        StepDetail(
            step=step_out(state.steps[number]),
            llm_calls=[_llm(e, payloads) for e in mine if isinstance(e, ev.LlmCallRecorded)],
            tool_calls=[_tool(e, payloads) for e in mine if isinstance(e, ev.ToolCallRecorded)],
            checkpoint=next(
                (_checkpoint(e, payloads) for e in mine if isinstance(e, ev.CheckpointSaved)),
                None,
            ),
            events=[EventOut(type=type(e).__name__, at=e.at, detail=describe(e)) for e in mine],
            log=_log_around(events, state.steps[number]),
        )
    )


def _log_around(events: Sequence[ev.RunEvent], step: StepState) -> list[LogLine]:
    """Output lines of the step's attempt read while it ran (with a second's slack: the
    worker reads them a moment after they are written)."""
    if step.started_at is None:
        return []
    start = step.started_at.timestamp() - LOG_SLACK_SECONDS
    end = (step.completed_at.timestamp() if step.completed_at else float("inf")) + LOG_SLACK_SECONDS
    return [
        LogLine(datetime.fromtimestamp(at, UTC), e.attempt, text)
        for e in events
        if isinstance(e, ev.AgentOutput) and e.attempt == step.attempt
        for at, text in e.lines
        if start <= at <= end
    ]


def _refs(events: Sequence[ev.RunEvent]) -> set[str]:
    refs: set[str] = set()
    for e in events:
        for name in ("request_ref", "response_ref", "input_ref", "output_ref", "result_ref"):
            value = getattr(e, name, None)
            if isinstance(value, str):
                refs.add(value)
    return refs


def _llm(e: ev.LlmCallRecorded, payloads: dict[str, PayloadOut]) -> LlmCallOut:
    return LlmCallOut(
        provider=e.provider,
        model=e.model,
        fingerprint=e.fingerprint,
        input_tokens=e.input_tokens,
        cached_input_tokens=e.cached_input_tokens,
        cache_write_tokens=e.cache_write_tokens,
        output_tokens=e.output_tokens,
        reasoning_tokens=e.reasoning_tokens,
        cost_usd=usd_string(e.cost_micro_usd),
        duration_ms=e.duration_ms,
        ttft_ms=e.ttft_ms,
        replayed=e.replayed,
        error=e.error,
        tool_calls=list(e.tool_calls),
        request=payloads.get(e.request_ref) if e.request_ref else None,
        response=payloads.get(e.response_ref) if e.response_ref else None,
        at=e.at,
        usage_estimated=e.usage_estimated,
        over_reservation=e.over_reservation,
        output_capped=e.output_capped,
    )


def _tool(e: ev.ToolCallRecorded, payloads: dict[str, PayloadOut]) -> ToolCallDetail:
    return ToolCallDetail(
        tool=e.tool,
        call_id=e.call_id,
        input=_content(e.input, e.input_ref, payloads),
        output=_content(e.output, e.output_ref, payloads),
        error=e.error,
        duration_ms=e.duration_ms,
        at=e.at,
    )


def _checkpoint(e: ev.CheckpointSaved, payloads: dict[str, PayloadOut]) -> CheckpointOut:
    return CheckpointOut(
        label=e.label,
        fingerprint=e.fingerprint,
        result=_content(e.result, e.result_ref, payloads),
        duration_ms=e.duration_ms,
    )


# -- the run's markers ----------------------------------------------------------------------


def _with(text: str, reason: str | None) -> str:
    return f"{text}: {reason}" if reason else text


def marker(event: ev.RunEvent, step: int, attempt: int | None) -> Marker | None:
    """The timeline marker of a run-level event (``None`` for step events)."""

    def make(kind: str, detail: str, at_attempt: int | None = attempt) -> Marker:
        return Marker(
            kind=kind, type=type(event).__name__, at=event.at, step=step, attempt=at_attempt,
            detail=detail,
        )  # fmt: skip

    match event:
        case ev.RunQueued():
            if event.replayed_from is not None:
                return make(
                    "queued",
                    f"replay of {event.replayed_from} from step {event.replay_from_step}",
                )
            return make("queued", f"queued by {event.trigger}")
        case ev.RunStarted():
            return make("started", f"attempt {event.attempt} started", event.attempt)
        case ev.AttemptLost():
            return make(
                "recovery",
                f"attempt {event.attempt} lost ({event.reason}); the run resumes from its "
                "recording",
                event.attempt,
            )
        case ev.DivergenceDetected():
            return make("divergence", describe(event))
        case ev.CancelRequested():
            return make("cancel", _with("cancel requested", event.reason))
        case ev.BudgetExceeded():
            return make("budget", event.message or f"budget exceeded ({event.limit})")
        case ev.RunResumed():
            return make("resumed", f"resumed ({event.reason})")
        case ev.RunCompleted():
            return make("ended", "completed")
        case ev.RunFailed():
            return make("ended", _with(f"failed: {event.code}", event.message))
        case ev.RunCancelled():
            return make("ended", _with("cancelled", event.reason))
        case ev.CallbackAttempted():
            why = event.error or event.status_code
            outcome = "delivered" if event.delivered else f"failed ({why})"
            return make("callback", f"callback attempt {event.attempt} {outcome}")
        case _:
            return None


def markers(events: Sequence[ev.RunEvent]) -> list[Marker]:
    found: list[Marker] = []
    step, attempt = 0, None
    for event in events:
        if isinstance(event, ev.StepStarted):
            step = event.step_number + 1
            continue
        if isinstance(event, ev.RunStarted):
            attempt = event.attempt
        # A divergence names its step; the others happen between steps.
        at_step = event.step_number if isinstance(event, ev.DivergenceDetected) else step
        made = marker(event, at_step, attempt)
        if made is not None:
            found.append(made)
    return found


@api.route(
    "GET", "/v1/runs/{id}/timeline",
    "The run's markers: attempts started and lost (recovery), divergence, cancel, budget, "
    "resume, end and callbacks, each with the step it came before",
    response=Timeline, tag="runs",
)  # fmt: skip
async def run_timeline(request: web.Request) -> web.Response:
    _, events = await _events(request)
    return http.json(Timeline(markers(events)))
