"""Run commands: load a run, validate new events against its state, append them with the
stream's expected version. The thin shell around the pure fold."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from eventstore.protocol import EventStore
from eventstore.types import RecordedEvent
from papayya.domain import events as ev
from papayya.domain.fold import fold, state_at
from papayya.domain.matcher import Recorded, recorded_calls
from papayya.domain.state import RunState
from papayya.errors import ConcurrencyError, InvalidInput, RunNotFound

RUN_CATEGORY: Final = "run"
MAX_RETRIES: Final = 20
# Events per read while state_at looks for the end of its step.
STATE_AT_PAGE: Final = 2000
# Summary fields copied from RunState; the steps are left out so the summary stays small
# however long the run gets.
_SUMMARY_SKIP: Final = frozenset(("steps", "reservations", "metadata"))


# A client's durable run id has up to 150 characters; stored, its project's id comes first.
MAX_RUN_ID: Final = 200


def run_stream(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id or len(run_id) > MAX_RUN_ID:
        raise InvalidInput(f"run_id must be a non-empty string of at most {MAX_RUN_ID} characters")
    return f"{RUN_CATEGORY}-{run_id}"


def run_events(recorded: Sequence[RecordedEvent]) -> list[ev.RunEvent]:
    events = [ev.from_recorded(r) for r in recorded]
    return [e for e in events if isinstance(e, ev.RunEvent)]


def _decode_run_events(rows: Sequence[tuple[str, str, datetime]]) -> list[ev.RunEvent]:
    events = [ev.decode_stored(t, data, at) for t, data, at in rows]
    return [e for e in events if isinstance(e, ev.RunEvent)]


def run_summary(state: RunState) -> dict[str, Any]:
    """The run as listed and shown before its steps: status, totals, links, times."""
    # Drop the steps before converting: converting them only to drop them made every append
    # of a long run slower than the last.
    data: dict[str, Any] = msgspec.to_builtins(
        msgspec.structs.replace(state, steps=(), reservations=(), metadata={})
    )
    for key in _SUMMARY_SKIP:
        data.pop(key, None)
    data["current_step"] = state.next_step
    return data


class Recording(msgspec.Struct, frozen=True):
    """The calls an attempt answers instead of making: its own earlier ones, or for a replay
    that has not run yet, its source's before ``until_step`` (then ``copied``: the answers
    are recorded again as the replay's own steps)."""

    calls: list[Recorded]
    until_step: int | None = None
    copied: bool = False


class Runs:
    """Commands on runs over any event store."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def events(self, run_id: str) -> list[ev.RunEvent]:
        rows = await self.store.read_stream_data(run_stream(run_id))
        if not rows:
            raise RunNotFound(f"run {run_id} not found")
        return _decode_run_events(rows)

    async def load(self, run_id: str) -> RunState:
        return fold(await self.events(run_id))

    async def refresh(self, state: RunState) -> RunState:
        """``state`` with the events appended since it was folded."""
        new = await self.store.read_stream(run_stream(state.run_id), state.version + 1)
        return fold(run_events(new), state) if new else state

    async def append_fresh(
        self,
        state: RunState,
        build: Callable[[RunState], Sequence[ev.RunEvent]],
        event_ids: Sequence[uuid.UUID] = (),
    ) -> RunState:
        """Append what ``build`` makes of the freshest state: another writer of the run (the
        meter, for one) moves it on, so rebuild after each lost race. Nothing to append on a
        state that may be behind is decided again on the fresh one."""
        for _ in range(MAX_RETRIES):
            events = build(state)
            if not events:
                fresh = await self.refresh(state)
                if fresh.version == state.version:
                    return state
                state = fresh
                continue
            try:
                return await self.append(state, events, event_ids=event_ids)
            except ConcurrencyError:
                state = await self.refresh(state)
        raise ConcurrencyError(f"run {state.run_id} kept changing; gave up after {MAX_RETRIES}")

    async def recording(
        self, state: RunState, events: Sequence[ev.RunEvent], kinds: frozenset[str]
    ) -> Recording:
        """What re-executed calls of ``kinds`` are answered from (DESIGN §5)."""
        own = recorded_calls(events, kinds)
        if own or state.replayed_from is None:
            return Recording(own)
        try:
            source = await self.events(state.replayed_from)
        except RunNotFound:  # the source is gone: the replay runs live
            return Recording([])
        return Recording(recorded_calls(source, kinds), state.replay_from_step, copied=True)

    async def state_at(self, run_id: str, step: int) -> RunState:
        """The state after step ``step``. Reads the run only as far as that needs: up to the
        first event that starts a later step, which ``state_at`` never folds past."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidInput("step must be an integer >= 0")
        stream = run_stream(run_id)
        events: list[ev.RunEvent] = []
        start = 1
        while True:
            rows = await self.store.read_stream_data(stream, start, start + STATE_AT_PAGE - 1)
            if not rows and start == 1:
                raise RunNotFound(f"run {run_id} not found")
            page = _decode_run_events(rows)
            events += page
            if len(rows) < STATE_AT_PAGE or any(
                isinstance(e, ev.StepStarted) and e.step_number > step for e in page
            ):
                return state_at(events, step)
            start += STATE_AT_PAGE

    async def append(
        self,
        state: RunState | None,
        events: Sequence[ev.RunEvent],
        payloads: Sequence[tuple[bytes, str]] = (),
        event_ids: Sequence[uuid.UUID] = (),
    ) -> RunState:
        """Append ``events`` after ``state`` (``None``: a new run starting with RunQueued).

        The fold validates first, so an illegal event appends nothing; the expected version
        makes a concurrent writer lose with ``ConcurrencyError`` instead of interleaving.
        ``event_ids`` (the first ones get them) make a retried append recognisable.
        """
        self._check(events)
        now = datetime.now(UTC)
        # Stamped here so the summary written with them carries the same times as a re-fold.
        events = [e if e.at is not None else msgspec.structs.replace(e, at=now) for e in events]
        new_state = fold(events, state)
        await self.store.append(
            run_stream(new_state.run_id),
            [
                ev.to_new_event(e, event_id=event_ids[i] if i < len(event_ids) else None)
                for i, e in enumerate(events)
            ],
            state.version if state is not None else "no_stream",
            summary=run_summary(new_state),
            payloads=payloads,
        )
        return new_state

    @staticmethod
    def _check(events: Sequence[ev.Event]) -> None:
        if not all(isinstance(e, ev.RunEvent) for e in events):
            raise InvalidInput("events must be run events")

    async def execute(
        self, run_id: str, decide: Callable[[RunState], Sequence[ev.RunEvent]]
    ) -> RunState:
        """Load, decide, append; on a concurrent write, reload and decide again."""
        for _ in range(MAX_RETRIES):
            state = await self.load(run_id)
            events = decide(state)
            if not events:
                return state
            try:
                return await self.append(state, events)
            except ConcurrencyError:
                continue
        raise ConcurrencyError(f"run {run_id} kept changing; gave up after {MAX_RETRIES} tries")

    async def queue(self, queued: ev.RunQueued) -> RunState:
        """Create a run; if it already exists, return it unchanged (safe to retry)."""
        try:
            return await self.append(None, [queued])
        except ConcurrencyError:
            return await self.load(queued.run_id)
