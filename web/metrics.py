"""Prometheus metrics of the control plane (DESIGN §10), in the default registry next to the
event store's and the projectors'.

Domain counters are driven by one background task that follows the event store from its head
at startup, so a run is counted once whichever process (API, worker, SDK) appended it. Gauges
of what exists now (queued and running runs) are read at scrape time from the aggregates the
runs projector keeps (``run_counts``, through the reporting repository), so a scrape costs the
same however many runs exist. No label ever holds a run id, and every label has a bounded set
of values whatever clients send: ``agent`` is a defined agent's id (SDK durable runs, whose
agent is any name the client chose, count as ``durable``; anything else as ``other``),
``model`` the price table's id of the model (``other`` for the rest, including models only a
rate card prices), ``route`` a route template.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from eventstore.postgres import PostgresEventStore
from eventstore.types import Cursor, Filters, RecordedEvent
from papayya.domain import events as ev
from papayya.money import MICRO_PER_USD
from papayya.pricing import table_model
from projections.lru import Lru
from projections.reporting import Reporting
from projections.runner import PROJECTION_LAG  # noqa: F401  (registers the gauge)
from web import keys

log = logging.getLogger(__name__)

RUN_CACHE_SIZE: Final = 50_000
LABEL_CACHE_SIZE: Final = 10_000
RETRY_SECONDS: Final = 1.0
DURABLE: Final = "durable"  # the agent label of SDK durable runs
OTHER: Final = "other"

RUNS = Counter("papayya_runs", "Runs that reached a terminal status.", ["agent", "status"])
RUN_DURATION = Histogram(
    "papayya_run_duration_seconds",
    "Time from a run's first start to its terminal status.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
STEPS = Counter("papayya_steps", "Steps started, by step type.", ["type"])
LLM_TOKENS = Counter(
    "papayya_llm_tokens",
    "Model tokens in disjoint buckets (kind: input, cached_input, cache_write, output, reasoning).",
    ["model", "kind"],
)
LLM_COST = Counter("papayya_llm_cost_usd", "Model spend in USD.", ["agent", "model"])
BUDGET_REJECTIONS = Counter(
    "papayya_budget_rejections",
    "Runs stopped because their budget refused a model call (BudgetExceeded events).",
)
QUEUE_DEPTH = Gauge("papayya_queue_depth", "Runs waiting for a worker (status queued).")
ACTIVE_RUNS = Gauge("papayya_active_runs", "Runs being executed (status running).")
HTTP_REQUESTS = Counter(
    "papayya_http_requests", "HTTP responses by route template and status.", ["route", "status"]
)

_TERMINAL: Final = {
    ev.RunCompleted: "completed",
    ev.RunFailed: "failed",
    ev.RunCancelled: "cancelled",
    ev.BudgetExceeded: "budget_exceeded",
}
_COUNTED: Final = Filters.of(
    categories=["run"],
    types=["RunQueued", "RunStarted", "StepStarted", "LlmCallRecorded"]
    + [cls.__name__ for cls in _TERMINAL],
)
_TOKEN_KINDS: Final = ("input", "cached_input", "cache_write", "output", "reasoning")


@dataclass(slots=True)
class _Run:
    agent: str  # the label: see the module's docstring
    started_at: datetime | None


class EventCounter:
    """Updates the domain counters from the run events appended after it starts."""

    def __init__(self, store: PostgresEventStore, cache_size: int = RUN_CACHE_SIZE) -> None:
        self.store = store
        self.reporting = Reporting.of(store)
        self._runs: Lru[str, _Run] = Lru(cache_size)
        self._agents: Lru[str, bool] = Lru(LABEL_CACHE_SIZE)  # agent id -> defined
        self._models: Lru[tuple[str, str], str] = Lru(LABEL_CACHE_SIZE)  # -> label
        self.position: Cursor | None = None  # where to resume after a store outage

    async def run(self, after: Cursor) -> None:
        """Follow the store from ``after`` until cancelled; survive a store outage."""
        self.position = after
        while True:
            try:
                async with self.store.subscribe(after=self.position, filters=_COUNTED) as sub:
                    async for recorded in sub:
                        try:
                            await self.count(recorded)
                        except Exception:  # one bad event must not stop the counting
                            log.exception("metrics: cannot count the event at %s", recorded.cursor)
                        self.position = recorded.cursor
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("metrics: following the event store failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def count(self, recorded: RecordedEvent) -> None:
        if recorded.event_type not in ev.EVENT_TYPES:
            return
        event = ev.from_recorded(recorded)
        stream = recorded.stream_id
        if isinstance(event, ev.RunQueued):
            self._runs.put(stream, _Run(await self._agent(event.agent_id, event.trigger), None))
        elif isinstance(event, ev.RunStarted):
            run = await self._run(stream)
            run.started_at = run.started_at or event.at
        elif isinstance(event, ev.StepStarted) and not event.replayed:
            # A replay's copy of its source's step was counted when the source ran it.
            STEPS.labels(event.step_type).inc()
        elif isinstance(event, ev.LlmCallRecorded) and not event.replayed:
            # A replayed call was answered from a recording: no provider saw those tokens.
            run = await self._run(stream)
            model = self._model(event.provider, event.model)
            tokens = (
                event.input_tokens,
                event.cached_input_tokens,
                event.cache_write_tokens,
                event.output_tokens,
                event.reasoning_tokens,
            )
            for kind, count in zip(_TOKEN_KINDS, tokens, strict=True):
                LLM_TOKENS.labels(model, kind).inc(count)
            LLM_COST.labels(run.agent, model).inc(event.cost_micro_usd / MICRO_PER_USD)
        elif type(event) in _TERMINAL:
            run = await self._run(stream)
            RUNS.labels(run.agent, _TERMINAL[type(event)]).inc()
            if isinstance(event, ev.BudgetExceeded):
                BUDGET_REJECTIONS.inc()
            if run.started_at is not None and event.at is not None:
                RUN_DURATION.observe(max(0.0, (event.at - run.started_at).total_seconds()))

    async def _run(self, stream: str) -> _Run:
        """What the counters need of a run; read from its summary for a run that was queued
        before this process started following the store."""
        run = self._runs.get(stream)
        if run is None:
            found = await self.store.summary(stream)
            summary = found[1] if found is not None else {}
            started = summary.get("started_at")
            agent = await self._agent(
                str(summary.get("agent_id") or ""), str(summary.get("trigger") or "")
            )
            run = _Run(agent, None if started is None else msgspec.convert(started, datetime))
            self._runs.put(stream, run)
        return run

    async def _agent(self, agent_id: str, trigger: str) -> str:
        """The ``agent`` label of a run of ``agent_id``."""
        if trigger == "sdk":
            return DURABLE
        defined = self._agents.get(agent_id)
        if defined is None:
            defined = await self.reporting.agent_exists(agent_id)
            self._agents.put(agent_id, defined)
        return agent_id if defined else OTHER

    def _model(self, provider: str, model: str) -> str:
        """The ``model`` label: the price table's id of the model, else ``OTHER``."""
        label = self._models.get((provider, model))
        if label is None:
            try:
                label = table_model(provider, model) or OTHER
            except Exception:  # whatever a provider reported, a metric is no reason to fail
                label = OTHER
            self._models.put((provider, model), label)
        return label


async def count_response(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: count by the route's template, never the raw path."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    HTTP_REQUESTS.labels(route, str(response.status)).inc()


async def refresh_gauges(store: PostgresEventStore) -> None:
    """Set the gauges that describe the present; a database that does not answer leaves
    them at their last values rather than failing the scrape."""
    try:
        reporting = Reporting.of(store)
        unfinished = await reporting.unfinished()
        QUEUE_DEPTH.set(unfinished.queued)
        ACTIVE_RUNS.set(unfinished.running)
        await reporting.refresh_projection_gauges()  # projectors may run in another process
        await store.visibility_lag()
    except Exception as exc:
        log.warning("metrics: cannot read the gauges (%s)", exc)


async def collector(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: count HTTP responses and follow the store for the domain counters.

    Registered after the event store's context, whose store it uses. The response hook is
    added here, while the app is starting and its signals are not frozen yet, so that all
    metrics wiring lives in one place.
    """
    app.on_response_prepare.append(count_response)
    store = app[keys.STORE]
    counter = EventCounter(store)
    task = asyncio.create_task(counter.run(await store.head()), name="metrics-counter")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
