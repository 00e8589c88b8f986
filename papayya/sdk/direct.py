"""The SDK's direct mode: runs are event streams written straight to Postgres."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import msgspec

from eventstore.postgres import PostgresEventStore
from papayya import liveness
from papayya.commands import cost, finish
from papayya.commands.checkpoint import ERROR_TEXT as TASK_ERROR_TEXT
from papayya.commands.checkpoint import MAX_TRIES, TaskEvent, record_checkpoint, task_events
from papayya.commands.durable import OpenRun, open_or_resume
from papayya.commands.payloads import stash, stash_raw
from papayya.domain import events as ev
from papayya.domain.matcher import Recorded
from papayya.domain.state import RunState
from papayya.errors import ConcurrencyError, InvalidInput, NotFound
from papayya.metering.meter import Meter
from papayya.metering.ratecards import RateCardCache
from papayya.readmodels.projects import (
    BOOTSTRAP_LOCK,
    create_project,
    get_project,
    project_by_name,
)
from papayya.runstates import CONTEXT, RunStates
from papayya.sdk.results import NO_CONTEXT, StepContext
from papayya.wire import INLINE_RESULT_BYTES as INLINE_RESULT_BYTES

DEFAULT_PROJECT: Final = "default"
PROJECT_ENV: Final = "PAPAYYA_PROJECT"


def _plain(value: Any) -> Any:
    """What msgspec cannot encode itself: a pydantic model (an OpenAI or Anthropic response,
    say) as its JSON-mode dump, as the published SDK records it."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    raise TypeError(f"a {type(value).__name__} has no JSON form")


_encoder = msgspec.json.Encoder(enc_hook=_plain)
TASKS: Final = frozenset({"task"})
# The snapshots a step's context keeps (by ref when bulky), as the durable API keeps them.
SNAPSHOTS: Final = ("input_snapshot", "output_snapshot")


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
    # HTTP mode: the run token of this attempt, for model calls through the server's gateway.
    run_token: str | None = None


async def local_project(pool: Any, name: str | None) -> str:
    """The id of the project direct-mode runs belong to, so that a server on the same
    database lists them like any other: the project ``name`` names (a name or an id), else
    the ``default`` project, created here (without a key: the server's first start gives it
    one, as it does to any keyless ``default``) if the database has none yet."""
    if name:
        found = await project_by_name(pool, name)
        if found is None:
            try:
                found = await get_project(pool, name)
            except NotFound:
                raise InvalidInput(f"{PROJECT_ENV}={name!r} names no project") from None
        return found.id
    async with pool.acquire() as conn, conn.transaction():
        # The server's bootstrap takes the same lock: one of the two creates ``default``.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BOOTSTRAP_LOCK)
        found = await project_by_name(conn, DEFAULT_PROJECT)
        if found is None:
            found = await create_project(conn, DEFAULT_PROJECT)
        return found.id


def cancelled(state: RunState) -> list[ev.RunEvent]:
    """The run ends cancelled, its process having heard the request (if it still runs)."""
    return [ev.RunCancelled(reason=state.cancel_reason)] if state.status == "running" else []


class DirectBackend:
    def __init__(self, store: PostgresEventStore, project: str | None = None) -> None:
        self.store = store
        self.project_name = project if project is not None else os.environ.get(PROJECT_ENV)
        self._project: str | None = None
        self.runs = RunStates(store)
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
        item_id: str | None = None,
    ) -> Opened:
        if self._project is None:
            self._project = await local_project(self.store.pool, self.project_name)
        project = await get_project(self.store.pool, self._project)
        spec = OpenRun(
            run_id=run_id,
            project_id=self._project,
            agent=agent,
            defaults=project.defaults,
            input=input,
            metadata={**(metadata or {}), **({"item_id": item_id} if item_id else {})},
            budget_micro_usd=budget_micro_usd,
            replayed_from=replay_of,
            replay_from_step=from_step,
            worker=worker_name(),
            # A run of another project (a replay queued through the API) may run here too.
            check_project=False,
        )
        if replay_of is not None:
            await self.runs.load(replay_of)  # RunNotFound before anything is written
        view, _ = await open_or_resume(self.runs, spec)
        state = view.state
        if state.status == "running":  # the first sign of life of this attempt
            await liveness.beat(self.store.pool, state.run_id, state.attempt)
        # A replay (opened here, or queued through the API and run here first) is answered
        # from its source; a resumed run from its own recording.
        found = await self.runs.recording(state, await self.runs.events(run_id), TASKS)
        return Opened(state, found.calls, found.until_step, copy_answers=found.copied)

    async def record_task(
        self,
        state: RunState,
        label: str,
        fingerprint: str,
        raw: bytes,
        duration_ms: float,
        context: StepContext = NO_CONTEXT,
    ) -> RunState:
        result, ref = await stash_raw(self.store, raw)
        if context.meta():
            return await self._with_context(state, context, lambda n: task_events(
                n, label, duration_ms=duration_ms, result=result, ref=ref, fingerprint=fingerprint
            ))  # fmt: skip
        return await record_checkpoint(
            self.runs, state, label, duration_ms=duration_ms, result=result, ref=ref,
            fingerprint=fingerprint,
        )  # fmt: skip

    async def record_task_error(
        self,
        state: RunState,
        label: str,
        error: BaseException,
        duration_ms: float,
        context: StepContext = NO_CONTEXT,
    ) -> RunState:
        message = f"{type(error).__name__}: {error}"[:TASK_ERROR_TEXT]
        if context.meta():
            return await self._with_context(state, context, lambda n: task_events(
                n, label, duration_ms=duration_ms, error=message
            ))  # fmt: skip
        return await record_checkpoint(
            self.runs, state, label, duration_ms=duration_ms, error=message
        )

    async def _with_context(
        self, state: RunState, context: StepContext, events: Callable[[int], list[TaskEvent]]
    ) -> RunState:
        """The task's events as the run's next step, its context kept as the durable API keeps
        it (in the metadata of the event that ends the step), so both paths read it alike."""
        kept = context.meta()
        for name in SNAPSHOTS:  # bulky ones go to the payloads table, by ref
            if name in kept:
                value, ref = await stash(self.store, kept.pop(name))
                kept[name if ref is None else f"{name}_ref"] = value if ref is None else ref
        meta = [None, {CONTEXT: kept}]
        async with self.runs.lock(state.run_id):
            for _ in range(MAX_TRIES):
                try:
                    view = await self.runs.append_view(state, events(state.next_step), meta=meta)
                except ConcurrencyError:
                    state = await self.runs.refresh(state)
                    continue
                return view.state
        raise ConcurrencyError(f"run {state.run_id} kept changing; gave up after {MAX_TRIES}")

    async def complete(self, state: RunState, raw: bytes) -> RunState:
        # As the durable API does: the same end again is a no-op, another one a Conflict.
        output, ref = await stash_raw(self.store, raw)
        return await finish.complete_run(self.runs, state, output, ref)

    async def fail(self, state: RunState, code: str, message: str) -> RunState:
        return await finish.fail_run(self.runs, state, code, message)

    async def record_cost(
        self, state: RunState, label: str, fingerprint: str, micro_usd: int
    ) -> RunState:
        return await self.runs.append_fresh(
            state, lambda s: cost.cost_events(s, label, fingerprint, micro_usd)
        )

    async def heartbeat(self, state: RunState, token: str | None) -> RunState:
        """The process is alive: the run as it is now, ended ``cancelled`` if someone asked
        it to stop (the process hears of it now and stops)."""
        await liveness.beat(self.store.pool, state.run_id, state.attempt)
        state = await self.runs.refresh(state)
        if state.cancel_requested and state.status == "running":
            state = await self.runs.append_fresh(state, cancelled)
        return state

    async def meter(self) -> Meter:
        """The metering core for this client's runs' model calls (made once, on first use)."""
        if self._meter is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
            self._session = session
            cards = RateCardCache(self.store.pool)
            self._meter = Meter(self.store, session, {}, cards, runs=self.runs)
        return self._meter

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def result_of(self, recorded: Recorded) -> Any:
        if recorded.result_ref is not None:
            return msgspec.json.decode(await self.store.get_payload(recorded.result_ref))
        return recorded.result
