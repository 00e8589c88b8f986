"""The SDK's HTTP mode: runs are written through the durable checkpoints API.

``papayya(base_url=..., api_key=...)`` (or ``PAPAYYA_BASE_URL`` / ``PAPAYYA_API_KEY``) uses
``HttpBackend``, which keeps the backend interface of ``DirectBackend``. The wire types below
are the API's contract, shared with the server through ``papayya.wire``: it decodes request
bodies strictly, and the SDK decodes answers ignoring fields it does not know yet.
"""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec

from papayya import __version__, wire
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.matcher import Recorded
from papayya.domain.state import RunState, StepState
from papayya.errors import (
    BudgetExhausted,
    Conflict,
    InvalidInput,
    NotFound,
    PapayyaError,
    PayloadTooLarge,
    StoreUnavailable,
    Unauthorized,
)
from papayya.sdk.direct import Opened
from papayya.sdk.results import NO_CONTEXT, StepContext

# The wire types (papayya.wire), under the names the SDK's callers know them by.
CheckpointBody = wire.CheckpointBody
DurableCheckpoint = wire.DurableCheckpoint
DurableRun = wire.DurableRun
DurableStep = wire.DurableStep
FinishRunBody = wire.FinishRunBody
Label = wire.Label
Message = wire.Message
Name = wire.Name
OpenRunBody = wire.OpenRunBody
RunId = wire.RunId

T = TypeVar("T")
wire_ack = wire.HeartbeatAck
LARGE_BODY: Final = 512 * 1024

# The wire types live in papayya.wire, shared with the server.


# -- a run document as the SDK's state ---------------------------------------------------------


def state_of(doc: DurableRun) -> RunState:
    """The run as the SDK holds it, built from the server's document. As in direct mode, a
    bulky result or output is left in its payload (``output_ref``) and only the ref is kept."""
    results = {c.step_number: c for c in doc.checkpoints}
    return RunState(
        run_id=doc.run_id,
        project_id=doc.project_id,
        agent_id=doc.agent,
        status=doc.status,
        input=doc.input,
        output=None if doc.output_ref else doc.output,
        output_ref=doc.output_ref,
        error_code=doc.error_code,
        error_message=doc.error_message,
        attempt=doc.attempt,
        steps=tuple(_step(s, results.get(s.step_number)) for s in doc.steps),
        trigger=doc.trigger,
        metadata=doc.metadata,
        replayed_from=doc.replayed_from,
        replay_from_step=doc.replay_from_step,
        queued_at=doc.created_at,
        started_at=doc.started_at,
        completed_at=doc.completed_at,
    )


def _step(step: DurableStep, checkpoint: DurableCheckpoint | None) -> StepState:
    ref = checkpoint.result_ref if checkpoint else None
    return StepState(
        step_number=step.step_number,
        step_type=step.step_type,
        attempt=step.attempt,
        label=step.label,
        status=step.status,
        fingerprint=step.fingerprint,
        output=checkpoint.result if checkpoint and not ref else None,
        output_ref=ref,
        error_code=step.error_code,
        error_message=step.error_message,
        duration_ms=step.duration_ms,
        started_at=step.started_at,
        completed_at=step.completed_at,
    )


def recording_of(doc: DurableRun) -> list[Recorded]:
    """The run's completed tasks as a recording; results come resolved, so no ref is kept."""
    fingerprints = {s.step_number: s.fingerprint for s in doc.steps}
    return [
        Recorded(
            step_number=c.step_number,
            kind="task",
            fingerprint=fingerprints.get(c.step_number) or "",
            result=c.result,
        )
        for c in doc.checkpoints
        if fingerprints.get(c.step_number)
    ]


def _with_step(state: RunState, label: str, fingerprint: str, out: DurableCheckpoint) -> RunState:
    """``state`` plus the step the server just recorded, folded here as the server did."""
    n, at = out.step_number, out.completed_at
    events: list[ev.RunEvent] = [
        ev.StepStarted(step_number=n, step_type="checkpoint", label=label, at=at)
    ]
    if out.status == "failed":
        message = out.error or ""
        events.append(
            ev.StepFailed(
                step_number=n,
                error_code="task_error",
                error_message=message,
                duration_ms=out.duration_ms,
                at=at,
            )
        )
    else:
        result = None if out.result_ref else out.result
        events += [
            ev.CheckpointSaved(
                step_number=n,
                label=label,
                fingerprint=fingerprint,
                result=result,
                result_ref=out.result_ref,
                duration_ms=out.duration_ms,
                at=at,
            ),
            ev.StepCompleted(step_number=n, duration_ms=out.duration_ms, at=at),
        ]
    return fold(events, state)


# -- errors ------------------------------------------------------------------------------------


def _error_classes(root: type[PapayyaError]) -> Iterator[type[PapayyaError]]:
    yield root
    for sub in root.__subclasses__():
        yield from _error_classes(sub)


# A server error's code names its class; a class that only inherits a code does not claim it.
_BY_CODE: Final[Mapping[str, type[PapayyaError]]] = {
    cls.code: cls for cls in _error_classes(PapayyaError) if "code" in vars(cls)
}
_BY_STATUS: Final[Mapping[int, type[PapayyaError]]] = {
    400: InvalidInput,
    401: Unauthorized,
    402: BudgetExhausted,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidInput,
}


class _ErrorDetail(msgspec.Struct):
    code: str = ""
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


def error_from(status: int, raw: bytes) -> PapayyaError:
    """The ``papayya.errors`` exception of an error answer, with the server's message."""
    try:
        detail = msgspec.json.decode(raw, type=_ErrorBody).error
    except msgspec.DecodeError:
        detail = _ErrorDetail(message=raw[:300].decode(errors="replace").strip())
    cls = _BY_CODE.get(detail.code) or _BY_STATUS.get(status) or PapayyaError
    if cls is PapayyaError and 400 <= status < 500:
        cls = InvalidInput
    return cls(detail.message or f"HTTP {status}")


# -- the backend -------------------------------------------------------------------------------


class Retry(msgspec.Struct, frozen=True):
    """Up to ``tries`` tries on a connection error, a 5xx or a 429, waiting ``base_delay``
    seconds doubled at each try (with jitter, at most ``max_delay``; a ``Retry-After`` within
    that is honoured). 4xx answers are never retried: the request itself is wrong."""

    tries: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    timeout: float = 30.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        wait: float = self.base_delay * 2**attempt * random.uniform(0.5, 1.0)
        if retry_after is not None:
            try:
                wait = max(wait, float(retry_after))
            except ValueError:
                pass
        return min(wait, self.max_delay)


class HttpBackend:
    """The backend of ``Run`` over the durable checkpoints API (``/v1/durable/runs``).

    Every call is safe to retry: opening sends an ``Idempotency-Key``, a checkpoint is
    idempotent on its label within the run's attempt, ending a run twice the same way is a
    no-op. Create it on the event loop that will use it (``connect``).
    """

    def __init__(self, base_url: str, api_key: str, retry: Retry | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"base_url must be an http(s) URL, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.retry = retry or Retry()
        self._session = aiohttp.ClientSession(
            headers={"X-Api-Key": api_key, "User-Agent": f"papayya-sdk/{__version__}"},
            timeout=aiohttp.ClientTimeout(total=self.retry.timeout),
        )

    @classmethod
    async def connect(cls, base_url: str, api_key: str, retry: Retry | None = None) -> HttpBackend:
        return cls(base_url, api_key, retry)

    async def close(self) -> None:
        await self._session.close()

    async def open(
        self,
        run_id: str,
        agent: str,
        *,
        input: Any,
        metadata: dict[str, Any] | None,
        budget_micro_usd: int | None,
        replay_of: str | None,
        from_step: int | None,
        item_id: str | None = None,
    ) -> Opened:
        body = OpenRunBody(
            run_id=run_id,
            agent=agent,
            item_id=item_id,
            input=input,
            metadata=metadata,
            budget_micro_usd=budget_micro_usd,
            replay_of=replay_of,
            from_step=from_step,
        )
        # One key per open: a retry of this request is answered as the first try was, instead
        # of starting yet another attempt.
        key = {"Idempotency-Key": uuid.uuid4().hex}
        doc = await self._call("POST", "/v1/durable/runs", DurableRun, body, key)
        state = state_of(doc)
        if not doc.checkpoints and doc.replayed_from is not None:
            # A new replay (or one queued through the API): answer from its source.
            source = await self._call("GET", _run_path(doc.replayed_from), DurableRun)
            return Opened(state, recording_of(source), doc.replay_from_step, True, doc.run_token)
        return Opened(state, recording_of(doc), None, False, doc.run_token)

    async def record_cost(
        self, state: RunState, label: str, fingerprint: str, micro_usd: int
    ) -> RunState:
        body = wire.CostBody(label=label, cost_micro_usd=micro_usd)
        path = _run_path(state.run_id) + "/costs"
        return state_of(await self._call("POST", path, DurableRun, body))

    async def heartbeat(self, state: RunState, token: str | None) -> RunState:
        """The process is alive (``/v1/runtime/heartbeat`` with the run token): the run as it
        is now. The server ends a local run that was asked to stop as ``cancelled``."""
        if token is None:
            return state
        try:
            ack = await self._call(
                "POST", "/v1/runtime/heartbeat", wire_ack, wire.EMPTY, {"X-Api-Key": token}
            )
        except Unauthorized:  # the attempt is over: ended, or replaced by a newer one
            ack = None
        if ack is not None and not ack.cancel_requested:
            return state
        return state_of(await self._call("GET", _run_path(state.run_id), DurableRun))

    def gateway_url(self, provider: str) -> str:
        """Where an official ``provider`` client sends its calls to be metered by the server."""
        return f"{self.base_url}/v1/llm/{provider}"

    async def record_task(
        self,
        state: RunState,
        label: str,
        fingerprint: str,
        raw: bytes,
        duration_ms: float,
        context: StepContext = NO_CONTEXT,
    ) -> RunState:
        body = CheckpointBody(
            label=label,
            duration_ms=duration_ms,
            result=msgspec.Raw(raw),  # already JSON: sent as it is
            completed_at=datetime.now(UTC),
            **_context(context),
        )
        return await self._checkpoint(state, label, fingerprint, body)

    async def record_task_error(
        self,
        state: RunState,
        label: str,
        error: BaseException,
        duration_ms: float,
        context: StepContext = NO_CONTEXT,
    ) -> RunState:
        body = CheckpointBody(
            label=label,
            duration_ms=duration_ms,
            completed_at=datetime.now(UTC),
            error=f"{type(error).__name__}: {error}"[:2000],
            **_context(context),
        )
        return await self._checkpoint(state, label, "", body)

    async def complete(self, state: RunState, raw: bytes) -> RunState:
        body = FinishRunBody(status="completed", output=msgspec.Raw(raw))
        return state_of(await self._call("PATCH", _run_path(state.run_id), DurableRun, body))

    async def fail(self, state: RunState, code: str, message: str) -> RunState:
        body = FinishRunBody(status="failed", error=message[:4000], error_code=code)
        return state_of(await self._call("PATCH", _run_path(state.run_id), DurableRun, body))

    async def result_of(self, recorded: Recorded) -> Any:
        return recorded.result  # the server resolves bulky results into the run document

    async def _checkpoint(
        self, state: RunState, label: str, fingerprint: str, body: CheckpointBody
    ) -> RunState:
        path = _run_path(state.run_id) + "/checkpoints"
        out = await self._call("POST", path, DurableCheckpoint, body)
        if out.step_number < state.next_step:
            return state  # a retry answered with a step this state already holds
        if out.step_number == state.next_step and state.in_flight is None:
            return _with_step(state, label, fingerprint, out)
        # Someone else wrote to the run meanwhile: take the server's view.
        return state_of(await self._call("GET", _run_path(state.run_id), DurableRun))

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        body: msgspec.Struct | None = None,
        headers: dict[str, str] | None = None,
    ) -> T:
        data = None if body is None else msgspec.json.encode(body)
        if data is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        url = self.base_url + path
        last: PapayyaError = StoreUnavailable()
        retry_after: str | None = None
        for attempt in range(self.retry.tries):
            if attempt:
                await asyncio.sleep(self.retry.delay(attempt - 1, retry_after))
                retry_after = None
            try:
                # aiohttp warns about big bytes bodies; a stream is read afresh on each try.
                sent = io.BytesIO(data) if data and len(data) > LARGE_BODY else data
                async with self._session.request(method, url, data=sent, headers=headers) as r:
                    raw = await r.read()
                    status, retry_after = r.status, r.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = StoreUnavailable(f"cannot reach {self.base_url}: {exc!r}")
                continue
            if status < 300:
                try:
                    return msgspec.json.decode(raw, type=type_)
                except msgspec.DecodeError as exc:
                    raise PapayyaError(f"unexpected answer from {url}: {exc}") from None
            last = error_from(status, raw)
            if status != 429 and status < 500:
                raise last
        raise last


def _context(context: StepContext) -> dict[str, Any]:
    """A step's context as the checkpoint body's fields."""
    kind = "llm" if context.kind == "llm" else None
    fields = {
        "item_id": context.item_id,
        "input_snapshot": context.input_snapshot,
        "output_snapshot": context.output_snapshot,
        "kind": kind,
        "llm": context.llm if kind else None,
    }
    return {k: v for k, v in fields.items() if v is not None}


def _run_path(run_id: str) -> str:
    return "/v1/durable/runs/" + quote(run_id, safe="")
