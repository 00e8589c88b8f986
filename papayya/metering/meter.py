"""One metered model call: replay or reserve, forward, record, settle (DESIGN §5-7).

Transport-neutral: the HTTP gateway and the SDK's in-process transport both call
``Meter.call`` with the raw request and get back a status, headers and a body or a stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from eventstore.payloads import payload_ref
from eventstore.protocol import EventStore
from papayya.budget import exhausted, prompt_token_bound, reserve
from papayya.domain import events as ev
from papayya.domain.events import StepType
from papayya.domain.fold import fold
from papayya.domain.matcher import Recorded, llm_fingerprint
from papayya.domain.state import Amount, RunState
from papayya.errors import BudgetExhausted, IllegalTransition, RunNotFound
from papayya.metering import providers as pv
from papayya.metering.charge import charge
from papayya.metering.loops import DEFAULT_THRESHOLD, repeated_tool_calls
from papayya.metering.runcache import RunCache, RunSlot
from papayya.metering.sse import SseSplitter
from papayya.pricing import RateCardEntry, UnitPrices, prices_for
from papayya.runstates import RunStates

CAPPED_HEADER: Final = "x-papayya-output-capped"
EXPIRED_TOKEN: Final = "invalid or expired run token (it works only while its run is running)"
CALLER_GONE: Final = "the caller went away before the stream ended"

RateCards = Callable[[str], Awaitable[Mapping[str, RateCardEntry]]]


@dataclass(frozen=True)
class Upstream:
    base_url: str
    api_key: str | None = field(repr=False)  # a provider key: never in a log line


@dataclass
class MeteredResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None


@dataclass
class _Call:
    """One call's facts as it goes through the meter."""

    run_id: str
    provider: pv.Provider
    kind: pv.Kind
    route: str
    body: dict[str, Any]
    fingerprint: str
    stream: bool
    # The run token's attempt (gateway calls): the call belongs to it and to no later one.
    attempt: int | None = None
    started: float = field(default_factory=time.perf_counter)
    upstream: Upstream | None = None
    ttft_ms: float | None = None
    # The reservation the call was admitted with, and the output cap the budget forced on it.
    reservation_id: str = ""
    held: Amount = field(default_factory=Amount)
    capped: int | None = None
    # Request and response bodies, stored by the settlement append itself (one commit).
    payloads: list[tuple[bytes, str]] = field(default_factory=list)

    def stage(self, content: bytes, content_type: str) -> str:
        self.payloads.append((content, content_type))
        return payload_ref(content)


@dataclass(frozen=True)
class _Flags:
    """How a call's recorded usage came about (see ``ev.LlmCallRecorded``)."""

    estimated: bool
    over: bool
    capped: int | None


def _refusal(provider: pv.Provider, status: int, code: str, message: str) -> MeteredResponse:
    body = json.dumps(pv.error_body(provider, status, code, message)).encode()
    headers = {"Content-Type": "application/json", "x-should-retry": "false"}
    return MeteredResponse(status, headers, body)


def unpriced_message(model: str, project_id: str) -> str:
    """Why a budgeted run may not call ``model``, and how to price it."""
    return (
        f"no price is known for model {model!r}, and this run has a budget (its own, its "
        "agent's or the project's default), so the call was not made. Price the model on the "
        f"project's rate card: PUT /v1/projects/{project_id}/rate-card with "
        f'{{"{model}": {{"input_per_million_usd": "…", "output_per_million_usd": "…"}}}} '
        f"(the card's other models included), or `papayya rate-card set {model} "
        "--input-per-million USD --output-per-million USD`"
    )


def _budget_refusal(provider: pv.Provider) -> MeteredResponse:
    message = "the run's budget does not cover this call; resume the run with a larger budget"
    return _refusal(provider, 402, "budget_exceeded", message)


class Meter:
    def __init__(
        self,
        store: EventStore,
        session: aiohttp.ClientSession,
        upstreams: Mapping[pv.Provider, Upstream],
        rate_cards: RateCards,
        runs: RunStates | None = None,
    ) -> None:
        """``upstreams`` are the providers the gateway forwards to; a call may name its own
        (the local SDK forwards with the caller's key). ``runs``: the process's run-state
        repository, so the meter and the other writers of a run share its state and lock."""
        self.store = store
        self.cache = RunCache(store, runs=runs)
        self.session = session
        self.upstreams = upstreams
        self.rate_cards = rate_cards

    async def call(
        self,
        run_id: str,
        provider: pv.Provider,
        route: str,
        raw: bytes,
        upstream: Upstream | None = None,
        attempt: int | None = None,
    ) -> MeteredResponse:
        """Meter one call of run ``run_id``. ``attempt``, if given (the gateway passes the run
        token's), must be the run's current attempt and the run must be running."""
        kind = pv.ROUTES.get((provider, route))
        if kind is None:
            return _refusal(provider, 404, "not_found", f"no such route: {route}")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return _refusal(provider, 400, "invalid_request_error", "the body is not JSON")
        if not isinstance(body, dict):
            return _refusal(provider, 400, "invalid_request_error", "the body is not an object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _refusal(provider, 400, "invalid_request_error", "model is required")
        stream = bool(body.get("stream"))
        route_key = f"{provider}/{route}"
        fingerprint = llm_fingerprint({**body, "__route": route_key, "__stream": stream})
        call = _Call(run_id, provider, kind, route, body, fingerprint, stream, attempt)
        call.upstream = upstream or self.upstreams[provider]
        # The common case, a live call of a running run this process has seen, decides on the
        # cached state without reading the stream first: the reservation's append checks the
        # version it was decided on (another process's write makes it catch up and decide
        # again), and whatever else the cached state says is checked on the stream first.
        slot = self.cache.cached(run_id)
        if slot is not None and _live_now(slot, call):
            return await self._live(slot, call, raw, checked=False)
        return await self._checked(call, raw)

    async def _checked(self, call: _Call, raw: bytes) -> MeteredResponse:
        """``call`` decided on the run's state caught up with its stream."""
        run_id, provider, attempt, fingerprint = (
            call.run_id, call.provider, call.attempt, call.fingerprint
        )  # fmt: skip
        try:
            slot = await self.cache.slot(run_id)
        except RunNotFound:
            slot = None
        if attempt is not None and (
            slot is None or slot.state.status != "running" or slot.state.attempt != attempt
        ):
            if (
                slot is not None
                and slot.state.attempt == attempt
                and (slot.state.status == "budget_exceeded")
            ):
                return _budget_refusal(provider)
            # The token of a completed run's last attempt gets its recorded answers, as a
            # local re-run of a completed run does in direct mode (the SDK's HTTP mode);
            # nothing else: a run that failed or was stopped keeps its token dead.
            if slot is None or slot.state.attempt != attempt or slot.state.status != "completed":
                return _refusal(provider, 401, "authentication_error", EXPIRED_TOKEN)
        if slot is None:
            return _refusal(provider, 404, "not_found", f"run {run_id} not found")
        if slot.state.status != "running":
            # A finished run re-executed locally still gets its recorded answers.
            recorded = slot.replayer.match("llm", fingerprint)
            if recorded is None and attempt is not None:
                # Through the gateway this process may hold the run's slot from its live
                # attempt, whose replayer never saw its own calls: a re-run starts afresh.
                slot = await self.cache.reload(run_id)
                recorded = slot.replayer.match("llm", fingerprint)
            if recorded is not None and not slot.copy_answers:
                return await self._answer(slot, call, recorded)
            if attempt is not None:
                return _refusal(provider, 401, "authentication_error", EXPIRED_TOKEN)
            return _refusal(provider, 409, "run_not_running", f"run is {slot.state.status}")
        recorded = slot.replayer.match("llm", fingerprint)
        if slot.replayer.diverged_at_step is not None and slot.state.diverged_at_step is None:
            step = slot.replayer.diverged_at_step
            await self.cache.append(
                slot, lambda s: [] if s.diverged_at_step is not None else
                [ev.DivergenceDetected(step_number=step, actual_fingerprint=fingerprint)]
            )  # fmt: skip
        if recorded is not None:
            return await self._answer(slot, call, recorded)
        return await self._live(slot, call, raw, checked=True)

    # -- answered from a recording --------------------------------------------------------

    async def _answer(self, slot: RunSlot, call: _Call, recorded: Recorded) -> MeteredResponse:
        # The replayer has moved past this call: a failed read here would make its retry
        # diverge and run live, so hold on through a restart of the store.
        ref = recorded.result_ref
        content = b""
        if ref is not None:
            content = await self.cache.through_outage(lambda: self.store.get_payload(ref))
        if slot.copy_answers:
            await self.cache.append(
                slot, lambda s: self._step_events(s, call, pv.CallResult(), None, 0, recorded)
            )
        if not call.stream:
            return MeteredResponse(200, {"Content-Type": "application/json"}, content)
        _, hide = pv.prepare_stream(call.kind, call.body)
        observer = pv.StreamObserver(call.kind, hide)

        async def restream() -> AsyncGenerator[bytes, None]:
            splitter = SseSplitter()
            for event in [*splitter.feed(content), *splitter.flush()]:
                if observer.observe(event):
                    yield event.raw

        return MeteredResponse(200, {"Content-Type": "text/event-stream"}, stream=restream())

    # -- live -----------------------------------------------------------------------------

    async def _live(self, slot: RunSlot, call: _Call, raw: bytes, checked: bool) -> MeteredResponse:
        """Reserve, then forward. ``checked``: the run was found running (in the call's
        attempt) on its caught-up state; otherwise on the cached one, and a refusal for what
        the state says is first checked on the stream (``_checked``)."""
        try:
            cap = pv.output_cap(call.kind, call.body)
            choices = pv.choices(call.kind, call.body)
        except pv.BadRequest as exc:
            return _refusal(call.provider, 400, "invalid_request_error", str(exc))
        prices = await self._prices(slot.state, call)
        messages = pv.message_count(call.kind, call.body)
        prompt = prompt_token_bound(raw, messages)
        reservation_id = uuid.uuid4().hex
        admitted: list[Any] = []
        # Why the last decision refused (on the state it was made on), if not for budget.
        refused: list[str] = []
        # Anthropic requires max_tokens, so it says little about the output the caller wants:
        # clamp it to what the budget affords, as an injected cap would be.
        clamp = call.kind == "messages"

        def decide(s: RunState) -> list[ev.RunEvent]:
            if s.reservation(reservation_id) is not None:
                return []  # taken by a try whose answer the store lost (a restart)
            admitted.clear()
            refused.clear()
            if s.status != "running" or s.attempt != slot.attempt or not _current(s, call):
                refused.append("not_running")
                return []
            if prices is None and s.budget.micro_usd is not None:
                # A budgeted run (every run, unless its project is explicitly unlimited)
                # never spends what it cannot count.
                refused.append("model_not_priced")
                return []
            # Calls in flight count: each may become a step.
            if s.max_steps is not None and s.next_step + len(s.reservations) >= s.max_steps:
                refused.append("max_steps")
                return []
            if slot.exceeded is not None:
                return []
            held = s.committed + s.reserved
            r = reserve(prompt, cap, prices, s.budget, held, choices=choices, clamp=clamp)
            if r is None:
                return []
            admitted.append(r)
            return [
                ev.BudgetReserved(
                    reservation_id=reservation_id,
                    amount_micro_usd=r.amount.micro_usd,
                    input_tokens=r.amount.input_tokens,
                    output_tokens=r.amount.output_tokens,
                )
            ]

        try:
            # A refusal is decided on the caught-up state (``RunCache.append``).
            await self.cache.append(slot, decide)
        except BudgetExhausted:
            admitted.clear()
        if not admitted and refused == ["not_running"]:
            if not checked:
                return await self._checked(call, raw)  # the run moved on: start over
            if call.attempt is None:
                return _refusal(
                    call.provider, 409, "run_not_running", f"run is {slot.state.status}"
                )
            # The attempt was lost meanwhile: its calls must not run beside the next one's.
            return _refusal(call.provider, 401, "authentication_error", EXPIRED_TOKEN)
        if not admitted and refused == ["model_not_priced"]:
            message = unpriced_message(str(call.body["model"]), slot.state.project_id)
            return _refusal(call.provider, 400, "model_not_priced", message)
        if not admitted and refused == ["max_steps"]:
            message = f"the run reached max_steps={slot.state.max_steps}"
            await self._end(slot, ev.RunFailed(code="max_steps_exceeded", message=message))
            return _refusal(call.provider, 400, "max_steps_exceeded", message)
        if not admitted:
            await self._exceeded(slot, "the run's budget does not cover this call")
            return _budget_refusal(call.provider)
        call.reservation_id, call.held = reservation_id, admitted[0].amount
        call.capped = admitted[0].inject_output_cap
        # The provider sees exactly the one cap reserved for (or none, if nothing needs one).
        body = pv.with_output_cap(call.kind, call.body, call.capped or cap or None)
        body, hide = pv.prepare_stream(call.kind, body)
        return await self._forward(slot, call, body, hide, prices)

    async def _prices(self, state: RunState, call: _Call) -> UnitPrices | None:
        card = await self.rate_cards(state.project_id)
        return prices_for(call.provider, str(call.body["model"]), card)

    async def _forward(
        self,
        slot: RunSlot,
        call: _Call,
        body: dict[str, Any],
        hide_usage: bool,
        prices: UnitPrices | None,
    ) -> MeteredResponse:
        upstream = call.upstream or self.upstreams[call.provider]
        payload = json.dumps(body).encode()
        request_ref = call.stage(payload, "application/json")
        headers = {"Content-Type": "application/json"}
        if upstream.api_key:
            if call.provider == "anthropic":
                headers["x-api-key"] = upstream.api_key
                headers["anthropic-version"] = "2023-06-01"
            else:
                headers["Authorization"] = f"Bearer {upstream.api_key}"
        url = f"{upstream.base_url.rstrip('/')}/{call.route}"
        answer = {} if call.capped is None else {CAPPED_HEADER: str(call.capped)}
        try:
            resp = await self.session.post(url, data=payload, headers=headers)
        except aiohttp.ClientConnectorError as exc:  # the request never reached the provider
            await self._settle(slot, call, prices, None, (request_ref, None), str(exc))
            return _refusal(call.provider, 502, "upstream_unreachable", f"provider: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Sent, perhaps answered and billed: what it used is unknown.
            why = f"provider: {exc!r}"
            await self._settle(slot, call, prices, None, (request_ref, None), why, True)
            return _refusal(call.provider, 502, "upstream_error", why)
        if not call.stream or resp.status >= 400:
            try:
                content = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = f"provider: {exc!r}"
                await self._settle(slot, call, prices, None, (request_ref, None), why, True)
                return _refusal(call.provider, 502, "upstream_error", why)
            finally:
                resp.release()
            call.ttft_ms = (time.perf_counter() - call.started) * 1000
            result = pv.parse_response(call.kind, _json(content)) if resp.status < 400 else None
            error = None if resp.status < 400 else f"HTTP {resp.status}: {content[:500]!r}"
            # A refusal is not billed; an answer without usage is counted at its reservation.
            estimated = result is not None and not result.usage_reported
            refs = (request_ref, call.stage(content, "application/json"))
            await self._settle(slot, call, prices, result, refs, error, estimated)
            ctype = resp.headers.get("Content-Type", "application/json")
            return MeteredResponse(resp.status, {"Content-Type": ctype, **answer}, content)
        return MeteredResponse(
            200,
            {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **answer},
            stream=self._relay(slot, call, resp, hide_usage, prices, request_ref),
        )

    async def _relay(
        self,
        slot: RunSlot,
        call: _Call,
        resp: aiohttp.ClientResponse,
        hide_usage: bool,
        prices: UnitPrices | None,
        request_ref: str,
    ) -> AsyncGenerator[bytes, None]:
        """Pass the stream through event by event; settle exactly once, however it ends."""
        observer = pv.StreamObserver(call.kind, hide_usage)
        splitter = SseSplitter()
        received = bytearray()
        error: str | None = CALLER_GONE
        settled = False

        async def settle() -> None:
            nonlocal settled
            settled = True
            await self._settle_stream(
                slot, call, prices, observer, request_ref, bytes(received), error
            )

        try:
            try:
                async for chunk in resp.content.iter_any():
                    if call.ttft_ms is None:
                        call.ttft_ms = (time.perf_counter() - call.started) * 1000
                    received += chunk
                    for event in splitter.feed(chunk):
                        if observer.observe(event):
                            yield event.raw
                for event in splitter.flush():
                    if observer.observe(event):
                        yield event.raw
                error = None if observer.ended else "the stream ended before its last event"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"the provider's stream broke off: {exc!r}"
            if error is not None:
                # Settled before the caller hears of it, so that what it reads next is true.
                await asyncio.shield(settle())
                yield pv.stream_error(call.kind, error)
        finally:
            resp.release()
            if not settled:
                if error == CALLER_GONE and observer.ended:
                    error = None  # a caller may hang up after the last event (sync SDKs do)
                await asyncio.shield(settle())

    async def _settle_stream(
        self,
        slot: RunSlot,
        call: _Call,
        prices: UnitPrices | None,
        observer: pv.StreamObserver,
        request_ref: str,
        received: bytes,
        error: str | None,
    ) -> None:
        ref = call.stage(received, "text/event-stream")
        result = observer.finish()
        estimated = not result.usage_reported
        await self._settle(slot, call, prices, result, (request_ref, ref), error, estimated)

    # -- recording ------------------------------------------------------------------------

    async def _settle(
        self,
        slot: RunSlot,
        call: _Call,
        prices: UnitPrices | None,
        result: pv.CallResult | None,
        refs: tuple[str | None, str | None],
        error: str | None,
        estimated: bool = False,
    ) -> None:
        """Settle the call's reservation and record its step. A call whose usage never
        arrived (``estimated``) counts as its reservation, the worst case it was admitted
        with; one that used more than that counts as reported, marked ``over_reservation``.
        Either may exhaust the budget, which then ends the run."""
        paid = charge(result, call.held, prices, estimated)
        result, cost, actual = paid.result, paid.cost, paid.amount
        estimated, over = paid.estimated, paid.over_reservation
        flags = _Flags(estimated, over, call.capped)

        def decide(s: RunState) -> list[ev.RunEvent]:
            if s.reservation(call.reservation_id) is None:
                return []  # settled already (a retry after a lost answer, or the sweeper)
            settled = ev.BudgetSettled(
                reservation_id=call.reservation_id,
                actual_micro_usd=cost,
                input_tokens=actual.input_tokens,
                output_tokens=actual.output_tokens,
                usage_estimated=estimated,
                over_reservation=over,
            )
            if s.status != "running" or not _current(s, call):
                return [settled]
            events = self._step_events(s, call, result, prices, cost, None, refs, error, flags)
            ending = self._after_step(s, events)
            if not ending and (estimated or over):
                ending = self._spent(slot, s, s.committed + actual)
            return [*events, settled, *ending]

        await self.cache.append(slot, decide, call.payloads)
        await self._maybe_end_for_budget(slot)

    def _spent(self, slot: RunSlot, state: RunState, committed: Amount) -> list[ev.RunEvent]:
        """End the run if what it has now spent leaves nothing of a limit; once the other
        calls in flight have settled, if there are any."""
        limit = exhausted(state.budget, committed)
        if limit is None:
            return []
        message = f"the run's {limit} budget is spent (a call counted at or above its reservation)"
        if len(state.reservations) > 1:
            slot.exceeded = message
            return []
        return [ev.BudgetExceeded(message=message, limit=limit)]

    def _step_events(
        self,
        state: RunState,
        call: _Call,
        result: pv.CallResult,
        prices: UnitPrices | None,
        cost: int,
        recorded: Recorded | None,
        refs: tuple[str | None, str | None] = (None, None),
        error: str | None = None,
        flags: _Flags | None = None,
    ) -> list[ev.RunEvent]:
        n = state.next_step
        elapsed = (time.perf_counter() - call.started) * 1000
        tokens = result.tokens
        step_type: StepType = "tool_call" if result.tool_calls else "response"
        version = prices.version if prices is not None else "unpriced"
        llm = ev.LlmCallRecorded(
            step_number=n,
            provider=call.provider,
            model=str(call.body["model"]),
            fingerprint=call.fingerprint,
            input_tokens=tokens.input_tokens,
            cached_input_tokens=tokens.cached_input_tokens,
            cache_write_tokens=tokens.cache_write_tokens,
            output_tokens=tokens.output_tokens,
            reasoning_tokens=tokens.reasoning_tokens,
            cost_micro_usd=cost,
            price_version=None if recorded is not None else version,
            request_ref=refs[0],
            response_ref=recorded.result_ref if recorded is not None else refs[1],
            tool_calls=tuple(result.tool_calls),
            error=error,
            duration_ms=0.0 if recorded is not None else elapsed,
            ttft_ms=call.ttft_ms,
            replayed=recorded is not None,
            usage_estimated=flags is not None and flags.estimated,
            over_reservation=flags is not None and flags.over,
            output_capped=None if flags is None else flags.capped,
        )
        end: ev.RunEvent = (
            ev.StepCompleted(step_number=n, duration_ms=llm.duration_ms)
            if error is None
            else ev.StepFailed(step_number=n, error_code="provider_error",
                               error_message=error[:2000], duration_ms=elapsed)
        )  # fmt: skip
        return [ev.StepStarted(step_number=n, step_type=step_type), llm, end]

    def _after_step(self, state: RunState, events: list[ev.RunEvent]) -> list[ev.RunEvent]:
        """Loop detection on the state the step's events lead to."""
        after = fold(events, state)
        threshold = state.loop_threshold or DEFAULT_THRESHOLD
        if repeated_tool_calls(after.steps) >= threshold:
            message = f"the same tool call was requested {threshold} times in a row"
            return [ev.RunFailed(code="loop_detected", message=message)]
        return []

    async def _exceeded(self, slot: RunSlot, message: str) -> None:
        slot.exceeded = message
        await self._maybe_end_for_budget(slot)

    async def _maybe_end_for_budget(self, slot: RunSlot) -> None:
        message = slot.exceeded
        if message is None:
            return

        def decide(s: RunState) -> list[ev.RunEvent]:
            if s.status != "running" or s.reservations:
                return []  # ends when the last call in flight has settled
            return [ev.BudgetExceeded(message=message)]

        await self.cache.append(slot, decide)

    async def _end(self, slot: RunSlot, event: ev.RunEvent) -> None:
        try:
            await self.cache.append(slot, lambda s: [event] if s.status == "running" else [])
        except IllegalTransition:
            pass


def _live_now(slot: RunSlot, call: _Call) -> bool:
    """Whether, by the cached state, ``call`` goes live (no recorded answer, no divergence to
    record): running, in the call's attempt."""
    state, replayer = slot.state, slot.replayer
    return (
        state.status == "running"
        and _current(state, call)
        and replayer.live
        and (replayer.diverged_at_step is None or state.diverged_at_step is not None)
    )


def _current(state: RunState, call: _Call) -> bool:
    """Whether ``call`` still belongs to the run's current attempt (always, for the SDK's
    calls, which have no attempt)."""
    return call.attempt is None or (state.status == "running" and state.attempt == call.attempt)


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None
