"""The run-state repository: every reader of a run's state in a process goes through one
``RunStates``, held under an ``AppKey`` by the API and owned by each worker.

It keeps an LRU of folded runs. A read fast-forwards the cached run by reading only the events
after its version, so a long run is neither re-read nor re-folded on every call; a run nobody
has asked for is read whole once. Several API processes and workers append to the same
streams, so a cached run is never trusted as it stands: a read always catches up first, and
an append carries the version its decision was made on (a stale one loses with
``ConcurrencyError`` and is decided again). Per-run locks serialise this process's writers of a
run, so they do not make each other lose.

Beside the fold, a cached run keeps what its events carry as metadata (``RunView``: the
context of each checkpoint, which open started the latest attempt, the current attempt's
tasks by label), which the durable API answers from, and the replayers of the runtime API.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from eventstore.protocol import EventStore
from eventstore.types import RecordedEvent
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.matcher import CallKind, Recorded, Replayer
from papayya.domain.state import RunState
from papayya.errors import RunNotFound
from papayya.runs import Runs, run_stream, run_summary

CACHED_RUNS: Final = 4096
CACHED_ATTEMPTS: Final = 1024
CACHED_ANSWERS: Final = 10_000
# Event metadata keys: what a run's events carry beside their domain data.
KEY: Final = "idempotency_key"
CREATED: Final = "created"
CONTEXT: Final = "context"

Meta = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RunView:
    """A run as folded, plus what its events carry as metadata: the context of each
    checkpoint, which open started the latest attempt (its idempotency key, and whether it
    created the run), and the current attempt's tasks by ``(label, failed)``, so a retried
    checkpoint finds its label without a scan."""

    state: RunState
    context: Mapping[int, Meta]
    start_key: str | None
    start_created: bool
    updated_at: datetime | None
    tasks: Mapping[tuple[str, bool], int]


def next_view(
    view: RunView | None, state: RunState, events: Iterable[tuple[ev.RunEvent, Meta]], at: Any
) -> RunView:
    """``view`` moved on to ``state`` by ``events`` (with their metadata)."""
    # Copied once per call, never per event, so catching up on a long run stays linear.
    context = dict(view.context) if view else {}
    tasks = dict(view.tasks) if view else {}
    key, created = (view.start_key, view.start_created) if view else (None, False)
    for event, meta in events:
        if isinstance(event, ev.RunStarted):
            key, created = meta.get(KEY), bool(meta.get(CREATED))
            tasks.clear()
        elif isinstance(event, ev.StepCompleted | ev.StepFailed):
            step = state.steps[event.step_number]
            if step.step_type == "checkpoint" and step.label is not None:
                tasks[step.label, step.status == "failed"] = step.step_number
        if meta.get(CONTEXT) and isinstance(event, ev.CheckpointSaved | ev.StepFailed):
            context[event.step_number] = meta[CONTEXT]
    return RunView(state, context, key, created, at, tasks)


def _caught_up(view: RunView | None, recorded: Sequence[RecordedEvent]) -> RunView:
    pairs = [
        (e, r.metadata or {}) for r in recorded if isinstance(e := ev.from_recorded(r), ev.RunEvent)
    ]
    state = fold([e for e, _ in pairs], view.state if view else None)
    return next_view(view, state, pairs, recorded[-1].recorded_at)


class RunStates(Runs):
    """``Runs`` (load, decide, append) over an LRU of folded runs that each read fast-forwards."""

    def __init__(self, store: EventStore, size: int = CACHED_RUNS) -> None:
        super().__init__(store)
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._size = size
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.replayers = Replayers(self)

    # -- reads ------------------------------------------------------------------------------

    async def view(self, run_id: str) -> RunView | None:
        """The run, caught up with its stream (one read of the events since the cached
        version); ``None`` if it does not exist."""
        cached = self._views.get(run_id)
        after = cached.state.version if cached else 0
        recorded = await self.store.read_stream(run_stream(run_id), after + 1)
        if recorded:
            cached = _caught_up(cached, recorded)
            self._keep(cached)
        elif cached is not None:
            self._views.move_to_end(run_id)
        return cached

    async def find(self, run_id: str) -> RunState | None:
        view = await self.view(run_id)
        return None if view is None else view.state

    async def load(self, run_id: str) -> RunState:
        view = await self.view(run_id)
        if view is None:
            raise RunNotFound(f"run {run_id} not found")
        return view.state

    async def refresh(self, state: RunState) -> RunState:
        """``state`` with the events appended since it was folded."""
        cached = self._views.get(state.run_id)
        if cached is None or cached.state.version < state.version:
            return await super().refresh(state)
        return await self.load(state.run_id)

    def cached(self, run_id: str) -> RunView | None:
        """The run as last seen here, possibly behind its stream (no query). Only for a
        decision that an append's expected version checks again."""
        return self._views.get(run_id)

    def lock(self, run_id: str) -> asyncio.Lock:
        """This process's lock on the run: its writers take turns instead of racing."""
        found = self._locks.get(run_id)
        if found is None:
            found = self._locks[run_id] = asyncio.Lock()
        return found

    # -- writes -----------------------------------------------------------------------------

    async def append(
        self,
        state: RunState | None,
        events: Sequence[ev.RunEvent],
        payloads: Sequence[tuple[bytes, str]] = (),
        event_ids: Sequence[uuid.UUID] = (),
    ) -> RunState:
        return (await self.append_view(state, events, payloads, event_ids)).state

    async def append_view(
        self,
        base: RunView | RunState | None,
        events: Sequence[ev.RunEvent],
        payloads: Sequence[tuple[bytes, str]] = (),
        event_ids: Sequence[uuid.UUID] = (),
        meta: Sequence[Meta | None] = (),
    ) -> RunView:
        """``Runs.append`` with event metadata after ``base`` (a view keeps its metadata), keeping
        the new state cached."""
        self._check(events)
        state = base.state if isinstance(base, RunView) else base
        now = datetime.now(UTC)
        events = [e if e.at is not None else msgspec.structs.replace(e, at=now) for e in events]
        pairs = [(e, meta[i] if i < len(meta) else None) for i, e in enumerate(events)]
        new_state = fold(events, state)
        result = await self.store.append(
            run_stream(new_state.run_id),
            [
                ev.to_new_event(
                    e,
                    event_id=event_ids[i] if i < len(event_ids) else None,
                    metadata=dict(m) if m else None,
                )
                for i, (e, m) in enumerate(pairs)
            ],
            state.version if state is not None else "no_stream",
            summary=run_summary(new_state),
            payloads=payloads,
        )
        if result.stream_version != new_state.version:
            # The store answered a retry of an append that committed earlier, at other
            # versions (its event ids were known): the fold above is not what is stored.
            self._views.pop(new_state.run_id, None)
            fresh = await self.view(new_state.run_id)
            assert fresh is not None  # it has just been appended to
            return fresh
        view = base if isinstance(base, RunView) else self._views.get(new_state.run_id)
        if state is None or (view is not None and view.state.version != state.version):
            view = None
        if view is None and state is not None:
            # The caller decided on a state this cache does not hold (folded elsewhere): the
            # metadata before it is unknown here, so read the run whole on its next use.
            self._views.pop(new_state.run_id, None)
            return next_view(None, new_state, [(e, m or {}) for e, m in pairs], now)
        view = next_view(view, new_state, [(e, m or {}) for e, m in pairs], now)
        self._keep(view)
        return view

    async def execute(
        self, run_id: str, decide: Callable[[RunState], Sequence[ev.RunEvent]]
    ) -> RunState:
        """Load (caught up), decide, append, under the run's lock; on another process's
        write in between, catch up and decide again."""
        async with self.lock(run_id):
            return await super().execute(run_id, decide)

    async def append_fresh(
        self,
        state: RunState,
        build: Callable[[RunState], Sequence[ev.RunEvent]],
        event_ids: Sequence[uuid.UUID] = (),
    ) -> RunState:
        """``Runs.append_fresh`` under the run's lock: the meter and the reports of one process
        take turns on a run instead of making each other decide again."""
        async with self.lock(state.run_id):
            return await super().append_fresh(state, build, event_ids)

    def _keep(self, view: RunView) -> None:
        run_id = view.state.run_id
        cached = self._views.get(run_id)
        if cached is None or cached.state.version < view.state.version:
            self._views[run_id] = view
        self._views.move_to_end(run_id)
        while len(self._views) > self._size:
            self._views.popitem(last=False)


class Replayers:
    """A replayer per (run, attempt, kind), built from the run's recording on first use: the
    answers a resumed attempt gets while its calls match the recording (DESIGN §5)."""

    def __init__(self, runs: Runs) -> None:
        self.runs = runs
        self._cache: OrderedDict[tuple[str, int, CallKind], Replayer] = OrderedDict()
        self._building: dict[tuple[str, int, CallKind], asyncio.Lock] = {}
        self._answers: OrderedDict[tuple[str, int, str], Recorded | None] = OrderedDict()

    async def match(
        self, state: RunState, kind: CallKind, fingerprint: str, key: str | None
    ) -> Recorded | None:
        """The replayer's answer; a retried question (same ``key``) gets the first answer
        again instead of moving the replayer on to the next recorded call."""
        replayer = await self.get(state, kind)
        if key is None:
            return replayer.match(kind, fingerprint)
        memo = (state.run_id, state.attempt, f"{kind}:{key}")
        if memo in self._answers:
            return self._answers[memo]
        found = self._answers[memo] = replayer.match(kind, fingerprint)
        while len(self._answers) > CACHED_ANSWERS:
            self._answers.popitem(last=False)
        return found

    async def get(self, state: RunState, kind: CallKind) -> Replayer:
        key = (state.run_id, state.attempt, kind)
        found = self._cache.get(key)
        if found is None:
            # One build per key; other runs' first calls do not wait behind this read.
            async with self._building.setdefault(key, asyncio.Lock()):
                found = self._cache.get(key)
                if found is None:
                    events = await self.runs.events(state.run_id)
                    # A replay's calls before its from_step come from its source too.
                    rec = await self.runs.recording(state, events, frozenset({kind}))
                    found = self._cache[key] = Replayer(rec.calls, rec.until_step)
                    while len(self._cache) > CACHED_ATTEMPTS:
                        self._cache.popitem(last=False)
            self._building.pop(key, None)
        self._cache.move_to_end(key)
        return found
