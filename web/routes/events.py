"""Event streams over SSE: a run's steps as they end, and a project's raw store events.

``GET /v1/runs/{id}/events`` joins the run's feed (``web.sse.RunFeed``): one store
subscription, one fold and one encoding per step for every watcher of the run in this
process. ``GET /v1/events`` follows every event of the caller's project through a store
subscription of its own (a queue fed by the store's single shared tailer), resumable from a
cursor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from eventstore.protocol import EventStore
from eventstore.types import Cursor, Filters, RecordedEvent
from papayya.errors import InvalidInput, RunNotFound
from papayya.models import StepOut
from papayya.runs import run_stream
from web import http, keys, sse
from web.openapi import api


class StoreEventOut(msgspec.Struct):
    """One stored event as ``GET /v1/events`` sends it; ``cursor`` resumes after it."""

    stream_id: str
    stream_version: int
    event_id: str
    event_type: str
    data: Any
    recorded_at: datetime
    cursor: str


# -- a run's steps ------------------------------------------------------------------------


def _after_step(request: web.Request) -> int:
    raw = sse.last_event_id(request)
    if raw is None:
        return -1
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput("Last-Event-ID must be a step number") from None
    if value < -1:
        raise InvalidInput("Last-Event-ID must be a step number")
    return value


@api.route(
    "GET", "/v1/runs/{id}/events",
    "A run's steps as server-sent events: `step` (id = step number) when each step ends or "
    "changes after, `output` (no id; {attempt, final, truncated, data: [{at, attempt, "
    "text}]}) with the agent's output lines as the worker records them (every few seconds "
    "while an attempt runs; lines recorded before the stream opened are in "
    "GET /v1/runs/{id}/logs), then `terminal` with the final status. "
    "Resumable with Last-Event-ID.",
    response=StepOut, content_type=sse.CONTENT_TYPE, tag="runs",
)  # fmt: skip
async def run_events_stream(request: web.Request) -> web.StreamResponse:
    run_id = http.path_id(request)
    after_step = _after_step(request)
    run_stream(run_id)  # a malformed id is bad input, before anything is read
    feeds = request.app[keys.FEEDS]
    feed = await feeds.open(run_id)
    listener = None
    try:
        if feed.state.project_id != http.project_id(request):
            raise RunNotFound(f"run {run_id} not found")
        listener = feed.join(after_step)
        return await sse.stream(request, listener.pump)
    finally:
        feeds.leave(run_id, feed, listener)


# -- a project's store events -------------------------------------------------------------


def _names(request: web.Request, name: str) -> list[str] | None:
    """A filter given as repeated parameters and/or comma-separated lists."""
    values = [v.strip() for raw in request.query.getall(name, []) for v in raw.split(",")]
    values = [v for v in values if v]
    return values or None


async def _start_cursor(request: web.Request, store: EventStore) -> Cursor:
    """``Last-Event-ID`` (a reconnect) wins over ``?cursor=``; ``now`` means the head."""
    raw = sse.last_event_id(request) or request.query.get("cursor") or None
    if raw == "now":
        return await store.head()
    return Cursor.parse(raw)


def store_event_out(event: RecordedEvent) -> StoreEventOut:
    return StoreEventOut(
        stream_id=event.stream_id,
        stream_version=event.stream_version,
        event_id=str(event.event_id),
        event_type=event.event_type,
        data=event.data,
        recorded_at=event.recorded_at,
        cursor=str(event.cursor),
    )


@api.route(
    "GET", "/v1/events",
    "The project's stored events as server-sent events (event = its type, id = an opaque "
    "cursor), from `cursor` (default: the start; `now`: only new ones) or Last-Event-ID",
    response=StoreEventOut, content_type=sse.CONTENT_TYPE, tag="events",
    query=(("cursor", "string"), ("category", "string"), ("type", "string"),
           ("stream", "string")),
)  # fmt: skip
async def store_events_stream(request: web.Request) -> web.StreamResponse:
    store = request.app[keys.STORE]
    project = http.project_id(request)
    after = await _start_cursor(request, store)
    filters = Filters.of(
        categories=_names(request, "category"),
        types=_names(request, "type"),
        streams=_names(request, "stream"),
    )
    owners = request.app[keys.STREAM_OWNERS]

    async def produce(source: sse.EventSource) -> None:
        async with store.subscribe(after=after, filters=filters) as events:
            async for event in events:
                if await owners.project_of(event) != project:
                    continue
                await source.send_json(
                    store_event_out(event), event=event.event_type, id=str(event.cursor)
                )

    return await sse.stream(request, produce)
