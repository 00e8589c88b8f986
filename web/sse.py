"""Server-sent events: a streaming response with heartbeats that notices a client leaving,
and the per-run feeds that fan a run's steps out to its subscribers.

A handler validates its request first (so errors are still JSON with a proper status), then
hands a producer to ``stream``. The producer runs in a task of its own; the handler's task
watches the connection, writes the ``: ping`` heartbeats and cancels the producer when the
client goes away or the server shuts down, so that the handler can release what it holds
(a store subscription, a place in a run's feed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final

import msgspec
from aiohttp import web

from eventstore.protocol import EventStore
from eventstore.types import Cursor, Filters, RecordedEvent
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.domain.state import RunState, StepState
from papayya.errors import PapayyaError, RunNotFound
from papayya.models import run_output_out, step_out
from papayya.runs import run_stream
from papayya.runstates import RunStates
from projections.lru import Lru
from web import keys
from web.middleware import error_body

log = logging.getLogger(__name__)

OWNER_CACHE_SIZE: Final = 100_000
_NO_PROJECT: Final = ""  # cached answer for a stream whose first event names no project
HEARTBEAT_SECONDS: Final = 15.0
# How often an idle stream checks that its client is still there. aiohttp does not cancel a
# handler whose client disconnected, so without this a silent stream would hold its
# subscription until the next heartbeat write failed.
WATCH_SECONDS: Final = 1.0
CONTENT_TYPE: Final = "text/event-stream"
_encoder = msgspec.json.Encoder()


def message(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE message. ``data`` is compact JSON, so it never holds a line break."""
    parts = []
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    if id is not None:
        parts.append(b"id: " + id.encode() + b"\n")
    parts.append(b"data: " + data + b"\n\n")
    return b"".join(parts)


def last_event_id(request: web.Request) -> str | None:
    """The ``Last-Event-ID`` a reconnecting client sends (blank counts as absent)."""
    value = request.headers.get("Last-Event-ID", "").strip()
    return value or None


class EventSource:
    """The writing side of one open stream."""

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self.last_write = time.monotonic()

    async def send(self, data: bytes, *, event: str | None = None, id: str | None = None) -> None:
        await self.write(message(data, event=event, id=id))

    async def send_json(
        self, value: object, *, event: str | None = None, id: str | None = None
    ) -> None:
        await self.send(_encoder.encode(value), event=event, id=id)

    async def comment(self, text: str) -> None:
        await self.write(b": " + text.encode() + b"\n\n")

    async def write(self, chunk: bytes) -> None:
        """Write whole messages. aiohttp hands a chunk to the transport whole before it awaits
        a drain, so the heartbeat and the producer never interleave inside a message."""
        self.last_write = time.monotonic()
        await self._response.write(chunk)


Producer = Callable[[EventSource], Awaitable[None]]


class OpenStreams:
    """The app's open streams, so that a shutting-down server can end them instead of waiting
    out its shutdown timeout on clients that never hang up."""

    def __init__(self) -> None:
        self.closing: set[asyncio.Event] = set()


async def close_all(app: web.Application) -> None:
    """``on_shutdown`` hook: end every open stream of ``app``."""
    for closing in list(app[keys.OPEN_STREAMS].closing):
        closing.set()


async def sse_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's stream registries: its open streams, the feeds of the runs watched here, and
    the memo of which project owns a stream (after the store and its run states exist)."""
    app[keys.OPEN_STREAMS] = OpenStreams()
    app[keys.FEEDS] = RunFeeds(app[keys.RUNS])
    app[keys.STREAM_OWNERS] = StreamOwners(app[keys.STORE])
    yield


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def stream(request: web.Request, produce: Producer) -> web.StreamResponse:
    """Answer ``request`` with an event stream fed by ``produce`` until it returns (the
    stream then ends), the client disconnects, the server shuts down, or the API key the
    request authenticated with is revoked (an ``error`` event then ends the stream)."""
    heartbeat, watch = HEARTBEAT_SECONDS, min(WATCH_SECONDS, HEARTBEAT_SECONDS)
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{CONTENT_TYPE}; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy must pass each event on at once
            "X-Request-Id": request.headers.get("X-Request-Id") or uuid.uuid4().hex,
        }
    )
    await response.prepare(request)
    source = EventSource(response)
    closing = asyncio.Event()
    open_streams = request.app[keys.OPEN_STREAMS].closing
    open_streams.add(closing)
    key_id, key_watch = request.get(keys.API_KEY_ID), request.app.get(keys.KEY_WATCH)
    revoked = asyncio.Event()
    if key_id is not None and key_watch is not None:
        revoked = key_watch.watch(key_id)
    producer = asyncio.create_task(_run(produce, source), name=f"sse {request.path}")
    # Woken at once when the stream must end, not at the next watch.
    ending = [asyncio.ensure_future(e.wait()) for e in (closing, revoked)]
    try:
        while not producer.done() and not closing.is_set() and not revoked.is_set():
            await asyncio.wait({producer, *ending}, timeout=watch, return_when="FIRST_COMPLETED")
            if producer.done() or _gone(request):
                break
            if time.monotonic() - source.last_write >= heartbeat:
                await source.comment("ping")
    except ConnectionError:  # the heartbeat found the client gone
        pass
    finally:
        open_streams.discard(closing)
        if key_id is not None and key_watch is not None:
            key_watch.unwatch(key_id, revoked)
        for task in (producer, *ending):
            task.cancel()
        # asyncio.wait, not await: the producer's CancelledError is its own, while a
        # cancellation of this task must still propagate.
        await asyncio.wait({producer, *ending})
    if not _gone(request):
        with contextlib.suppress(ConnectionError):
            if revoked.is_set():
                body = error_body("unauthorized", "the API key of this stream was revoked")
                await source.send_json(body, event="error")
            await response.write_eof()
    return response


async def _run(produce: Producer, source: EventSource) -> None:
    """Run the producer; a failure ends the stream with an ``error`` event, not a traceback
    in the middle of someone's event stream."""
    try:
        await produce(source)
    except ConnectionError:
        pass
    except PapayyaError as exc:
        with contextlib.suppress(ConnectionError):
            await source.send_json(error_body(exc.code, exc.message), event="error")
    except Exception:
        log.exception("event stream failed")
        with contextlib.suppress(ConnectionError):
            await source.send_json(
                error_body("internal_error", "internal server error"), event="error"
            )


# -- one run's steps, shared by every subscriber in this process ------------------------------
#
# A thousand clients watching one run cost one store subscription, one fold and one JSON
# encoding per step: the feed folds the run's events and hands the same encoded messages to
# every listener, whose own task only writes them to its socket (several at once if it is
# behind, in one write).

MAX_PENDING: Final = 10_000
"""Messages a listener may fall behind by before its stream is ended; the client then
reconnects with Last-Event-ID and resumes, while memory stays bounded."""


class StepFeed:
    """Which steps to send while a run is folded: each step when it ends, and again whenever
    it changes after that (a tool that ran after its model call, a late-settled model call)."""

    def __init__(self) -> None:
        self._sent: dict[int, StepState] = {}

    def changed(self, state: RunState, numbers: Iterable[int]) -> list[StepState]:
        """The steps among ``numbers`` to send now, in step order."""
        due = []
        for number in sorted(set(numbers)):
            if not 0 <= number < len(state.steps):
                continue
            step = state.steps[number]
            if step.status != "running" and self._sent.get(number) != step:
                self._sent[number] = step
                due.append(step)
        return due


class TerminalOut(msgspec.Struct):
    """The last event of a run's stream: the status it ended with."""

    status: str
    error_code: str | None
    error_message: str | None


class Listener:
    """One subscriber of a feed: the encoded messages it has not written yet."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.ready = asyncio.Event()
        self.ended = False  # nothing more will come: the run ended, the feed failed, or lag

    def push(self, chunk: bytes) -> None:
        if self.ended:
            return
        if len(self.pending) >= MAX_PENDING:
            self.end()
            return
        self.pending.append(chunk)
        self.ready.set()

    def end(self) -> None:
        self.ended = True
        self.ready.set()

    async def pump(self, source: EventSource) -> None:
        """Write what arrives until the feed ends this listener."""
        while True:
            await self.ready.wait()
            self.ready.clear()  # before taking, so a push during the write sets it again
            if self.pending:
                chunk = b"".join(self.pending)
                self.pending.clear()
                await source.write(chunk)
            if self.ended and not self.pending:
                return


def _touched(state: RunState, event: ev.RunEvent) -> list[int]:
    """The steps an event may have changed: the one it names, and the last one (which a
    recovery or the run's end closes)."""
    numbers = [len(state.steps) - 1]
    number = getattr(event, "step_number", None)
    if isinstance(number, int):
        numbers.append(number)
    return numbers


class RunFeed:
    """A run's step messages: backfilled from its stream, then followed live."""

    def __init__(self, store: EventStore, state: RunState, cursor: Cursor) -> None:
        """``state`` was read after the store's head was ``cursor``: the subscription from
        there skips what the state holds already (by stream version) and misses nothing."""
        self.store = store
        self.stream = run_stream(state.run_id)
        self.state = state
        self.version = state.version
        self.cursor = cursor
        self.latest: dict[int, bytes] = {}  # step number -> its latest message, in step order
        self.terminal: bytes | None = None
        self.failed = False
        self.listeners: set[Listener] = set()
        self._steps = StepFeed()
        self._publish(self.state, range(len(self.state.steps)))
        self.task: asyncio.Task[None] | None = None
        if self.terminal is None:
            self.task = asyncio.create_task(self._follow(), name=f"feed {self.stream}")

    def join(self, after_step: int) -> Listener:
        """A listener primed with the latest message of every step after ``after_step``; it
        gets every message published from now on (steps up to ``after_step`` included)."""
        listener = Listener()
        listener.pending.extend(m for n, m in self.latest.items() if n > after_step)
        if self.terminal is not None:
            listener.pending.append(self.terminal)
            listener.end()
        elif self.failed:
            listener.end()
        else:
            listener.ready.set()
            self.listeners.add(listener)
        return listener

    def _publish(self, state: RunState, numbers: Iterable[int]) -> None:
        for step in self._steps.changed(state, numbers):
            chunk = message(_encoder.encode(step_out(step)), event="step", id=str(step.step_number))
            self.latest[step.step_number] = chunk
            for listener in self.listeners:
                listener.push(chunk)
        if state.is_terminal:
            out = TerminalOut(state.status, state.error_code, state.error_message)
            self.terminal = message(_encoder.encode(out), event="terminal")
            for listener in self.listeners:
                listener.push(self.terminal)
                listener.end()

    async def _follow(self) -> None:
        # One stream's events come in version order after the last one read, so this
        # subscription continues exactly where the backfill stopped.
        filters = Filters.of(streams=[self.stream])
        try:
            async with self.store.subscribe(after=self.cursor, filters=filters) as live:
                async for item in live:
                    if item.stream_version <= self.version:
                        continue
                    self.version = item.stream_version
                    if item.event_type not in ev.EVENT_TYPES:
                        continue  # written by newer code: not ours to interpret
                    event = ev.from_recorded(item)
                    if not isinstance(event, ev.RunEvent):
                        continue
                    if isinstance(event, ev.AgentOutput):  # sent as read, not kept for joiners
                        chunk = message(_encoder.encode(run_output_out(event)), event="output")
                        for listener in self.listeners:
                            listener.push(chunk)
                    self.state = fold([event], self.state)
                    self._publish(self.state, _touched(self.state, event))
                    if self.terminal is not None:
                        return
        except Exception:
            # Listeners' streams end; their clients reconnect and resume from their last step.
            log.exception("following %s failed", self.stream)
            self.failed = True
            for listener in self.listeners:
                listener.end()


class RunFeeds:
    """The feeds of the runs that someone is watching in this process, backfilled from the
    run-state repository."""

    def __init__(self, runs: RunStates) -> None:
        self.runs = runs
        self._feeds: dict[str, RunFeed] = {}
        self._opening: dict[str, asyncio.Task[None]] = {}

    async def open(self, run_id: str) -> RunFeed:
        """The run's feed, made if need be (``RunNotFound`` if the run does not exist). Join
        it before the next await, or a feed nobody joined may be closed under you."""
        while True:
            feed = self._feeds.get(run_id)
            if feed is not None and not feed.failed:
                return feed
            # One read per run however many ask at once, in a task of its own so that one of
            # them leaving does not fail the others; then look again, as it may have closed.
            task = self._opening.get(run_id)
            if task is None:
                task = asyncio.create_task(self._open(run_id), name=f"open feed {run_id}")
                self._opening[run_id] = task
                task.add_done_callback(lambda t: self._opened(run_id, t))
            await asyncio.shield(task)

    async def _open(self, run_id: str) -> None:
        head = await self.runs.store.head()
        state = await self.runs.find(run_id)
        if state is None:
            raise RunNotFound(f"run {run_id} not found")
        self._feeds[run_id] = RunFeed(self.runs.store, state, head)

    def _opened(self, run_id: str, task: asyncio.Task[None]) -> None:
        del self._opening[run_id]
        if not task.cancelled():
            task.exception()  # retrieved: its awaiters have it, or nobody wants it

    def leave(self, run_id: str, feed: RunFeed, listener: Listener | None) -> None:
        """``listener`` is done with ``feed``; the last one out closes the feed."""
        if listener is not None:
            feed.listeners.discard(listener)
        if not feed.listeners and self._feeds.get(run_id) is feed:
            del self._feeds[run_id]
            if feed.task is not None:
                feed.task.cancel()


# -- which project a stream belongs to ---------------------------------------------------


def _owner_in(data: Any) -> str:
    project = data.get("project_id") if isinstance(data, dict) else None
    return project if isinstance(project, str) and project else _NO_PROJECT


class StreamOwners:
    """Which project a stream belongs to: the ``project_id`` of its first event (RunQueued,
    AgentDefined, …), which never changes, so the memo never goes stale. Streams whose first
    event names no project belong to none and are never sent to anyone."""

    def __init__(self, store: EventStore, capacity: int = OWNER_CACHE_SIZE) -> None:
        self._store = store
        self._known: Lru[str, str] = Lru(capacity)
        self._loading: dict[str, asyncio.Task[str]] = {}

    async def project_of(self, event: RecordedEvent) -> str:
        known = self._known.get(event.stream_id)
        if known is not None:
            return known
        if event.stream_version == 1:
            owner = _owner_in(event.data)
        else:
            owner = await self._load(event.stream_id)
        self._known.put(event.stream_id, owner)
        return owner

    async def _load(self, stream_id: str) -> str:
        # Subscribers that meet the same unknown stream at once share one read, made by a
        # task of its own so that one of them leaving does not fail the others.
        task = self._loading.get(stream_id)
        if task is None:
            task = asyncio.create_task(self._first_owner(stream_id))
            self._loading[stream_id] = task
            task.add_done_callback(lambda t: self._loaded(stream_id, t))
        return await asyncio.shield(task)

    async def _first_owner(self, stream_id: str) -> str:
        first = await self._store.read_stream(stream_id, 1, 1)
        return _owner_in(first[0].data) if first else _NO_PROJECT

    def _loaded(self, stream_id: str, task: asyncio.Task[str]) -> None:
        del self._loading[stream_id]
        if not task.cancelled():
            task.exception()  # retrieved: its awaiters have it, or nobody wants it
