"""The SDK's direct mode: runs are event streams written straight to Postgres."""

from __future__ import annotations

import os
import socket
from typing import Any, Final

import aiohttp
import msgspec

from eventstore.postgres import PostgresEventStore
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.handover import settled_in_full
from papayya.domain.matcher import Recorded, recorded_calls
from papayya.domain.state import RunState
from papayya.errors import InvalidInput, RunNotFound
from papayya.metering.meter import Meter
from papayya.metering.ratecards import RateCardCache
from papayya.runs import Runs

LOCAL_PROJECT: Final = "local"
# Results larger than this go to the payloads table; the event keeps a reference.
INLINE_RESULT_BYTES: Final = 4096
_encoder = msgspec.json.Encoder()
TASKS: Final = frozenset({"task"})


def worker_name() -> str:
    return f"sdk:{socket.gethostname()}:{os.getpid()}"


def encode_result(value: Any) -> bytes:
    """JSON of a task result or run output; ``InvalidInput`` if it has none."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(
            f"the result is not JSON-serialisable ({exc}); return plain data (dict, list, "
            "str, int, float, bool, None) so it can be recorded"
        ) from None


class Opened(msgspec.Struct, frozen=True):
    state: RunState
    recording: list[Recorded]
    until_step: int | None
    copy_answers: bool


class DirectBackend:
    def __init__(self, store: PostgresEventStore) -> None:
        self.store = store
        self.runs = Runs(store)
        self._meter: Meter | None = None
        self._session: aiohttp.ClientSession | None = None

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
    ) -> Opened:
        try:
            events = await self.runs.events(run_id)
        except RunNotFound:
            events = None
        if events is not None:
            return await self._resume(run_id, agent, events)
        recording: list[Recorded] = []
        if replay_of is not None:
            recording = recorded_calls(await self.runs.events(replay_of), TASKS)
        queued = ev.RunQueued(
            run_id=run_id,
            project_id=LOCAL_PROJECT,
            agent_id=agent,
            input=input,
            budget_micro_usd=budget_micro_usd,
            trigger="replay" if replay_of else "sdk",
            replayed_from=replay_of,
            replay_from_step=from_step if replay_of else None,
            metadata=metadata or {},
        )
        state = await self.runs.append(
            None, [queued, ev.RunStarted(attempt=1, worker=worker_name())]
        )
        return Opened(state, recording, from_step, copy_answers=replay_of is not None)

    async def _resume(self, run_id: str, agent: str, events: list[ev.RunEvent]) -> Opened:
        state = fold(events)
        if state.agent_id != agent:
            raise InvalidInput(f"run {run_id} belongs to agent {state.agent_id!r}, not {agent!r}")
        if state.status in ("queued", "running"):
            # A new attempt: after a crash the fold gives up the step that was in flight, and
            # the model calls it had in flight count in full (their usage is lost with it).
            attempt = ev.RunStarted(attempt=state.attempt + 1, worker=worker_name())
            state = await self.runs.append(state, [*settled_in_full(state.reservations), attempt])
        # A replay queued through the API runs here first: answered from its source.
        found = await self.runs.recording(state, events, TASKS)
        return Opened(state, found.calls, found.until_step, copy_answers=found.copied)

    async def record_task(
        self, state: RunState, label: str, fingerprint: str, raw: bytes, duration_ms: float
    ) -> RunState:
        result, ref = await self._inline_or_payload(raw)

        def events(s: RunState) -> list[ev.RunEvent]:
            n = s.next_step
            return [
                ev.StepStarted(step_number=n, step_type="checkpoint", label=label),
                ev.CheckpointSaved(
                    step_number=n,
                    label=label,
                    fingerprint=fingerprint,
                    result=result,
                    result_ref=ref,
                    duration_ms=duration_ms,
                ),
                ev.StepCompleted(step_number=n, duration_ms=duration_ms),
            ]

        return await self.runs.append_fresh(state, events)

    async def record_task_error(
        self, state: RunState, label: str, error: BaseException, duration_ms: float
    ) -> RunState:
        def events(s: RunState) -> list[ev.RunEvent]:
            n = s.next_step
            return [
                ev.StepStarted(step_number=n, step_type="checkpoint", label=label),
                ev.StepFailed(
                    step_number=n,
                    error_code="task_error",
                    error_message=f"{type(error).__name__}: {error}"[:2000],
                    duration_ms=duration_ms,
                ),
            ]

        return await self.runs.append_fresh(state, events)

    async def complete(self, state: RunState, raw: bytes) -> RunState:
        output, ref = await self._inline_or_payload(raw)
        completed = ev.RunCompleted(output=output, output_ref=ref)
        return await self.runs.append_fresh(state, lambda s: [completed])

    async def fail(self, state: RunState, code: str, message: str) -> RunState:
        failed = ev.RunFailed(code=code, message=message[:4000])
        return await self.runs.append_fresh(state, lambda s: [failed])

    async def meter(self) -> Meter:
        """The metering core for this client's runs' model calls (made once, on first use)."""
        if self._meter is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
            self._session = session
            self._meter = Meter(self.store, session, {}, RateCardCache(self.store.pool))
        return self._meter

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def result_of(self, recorded: Recorded) -> Any:
        if recorded.result_ref is not None:
            return msgspec.json.decode(await self.store.get_payload(recorded.result_ref))
        return recorded.result

    async def _inline_or_payload(self, raw: bytes) -> tuple[Any, str | None]:
        if len(raw) <= INLINE_RESULT_BYTES:
            return msgspec.json.decode(raw), None
        return None, await self.store.put_payload(raw, "application/json")
