"""Projection lag benchmark: commit -> read-model row committed, with the projectors live.

Run from the repo root: ``.venv/bin/python bench/projections.py [--rate 1000] [--seconds 10]``.
It creates a throw-away database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the
local one), migrates it, measures, drops it and prints a Markdown table.

A writer process appends realistic runs (queued+started, then per step: started+model call,
completed; then completed) paced at ``--rate`` events per second, and notes the wall-clock time
each append returned. This process runs every projector live (``Projections.run``) and notes
when each event's batch committed. Lag = projector commit - writer commit, per event. Then it
times a rebuild of each projection over everything written.

Postgres's read fence is cluster-wide: a long transaction anywhere on the server (another
test suite, say) holds it back and shows up here as lag. The background column samples that.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script; also keeps bench/eventstore.py unseen

import asyncpg  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from eventstore.types import Filters, RecordedEvent  # noqa: E402
from papayya.domain import events as ev  # noqa: E402
from projections import Projections  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_P99_MS = 100.0
BASELINE = "(store subscriber: commit -> delivered)"
STEPS_PER_RUN = 4
WRITER_CONNECTIONS = 8
Commit = tuple[str, int, int, float]  # stream, first version, last version, wall time


def run_chunks(run_id: str) -> list[list[ev.RunEvent]]:
    """A run as its appends: what a runtime writes at each point of its life."""
    chunks: list[list[ev.RunEvent]] = [
        [
            ev.RunQueued(run_id=run_id, project_id="bench", agent_id="agent"),
            ev.RunStarted(attempt=1),
        ]
    ]
    for n in range(STEPS_PER_RUN):
        call = ev.LlmCallRecorded(
            step_number=n, provider="openai", model="gpt-4o-mini", fingerprint=f"fp{n}",
            input_tokens=1200, cached_input_tokens=300, output_tokens=250, cost_micro_usd=420,
        )  # fmt: skip
        chunks.append([ev.StepStarted(step_number=n, step_type="tool_call"), call])
        chunks.append([ev.StepCompleted(step_number=n, duration_ms=812.5, output={"ok": n})])
    chunks.append([ev.RunCompleted(output={"answer": "done"})])
    return chunks


# -- the writer process ------------------------------------------------------------------------


class Pacer:
    """Hands out send times so that all writers together append ``rate`` events a second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next = time.perf_counter()

    async def take(self, events: int) -> None:
        at, self.next = self.next, max(self.next, time.perf_counter() - 0.1) + events / self.rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)


async def write(dsn: str, rate: float, seconds: float, actors: int) -> list[Commit]:
    # Few connections: the server is often shared, and the append itself is short.
    store = await PostgresEventStore.connect(dsn, max_size=WRITER_CONNECTIONS)
    pacer = Pacer(rate)
    commits: list[Commit] = []
    deadline = time.perf_counter() + seconds

    async def actor(index: int) -> None:
        runs = 0
        while time.perf_counter() < deadline:
            run_id = f"{index}-{runs}"
            version = 0
            for chunk in run_chunks(run_id):
                await pacer.take(len(chunk))
                await store.append(f"run-{run_id}", [ev.to_new_event(e) for e in chunk], version)
                commits.append((f"run-{run_id}", version + 1, version + len(chunk), time.time()))
                version += len(chunk)
            runs += 1

    try:
        await asyncio.gather(*(actor(i) for i in range(actors)))
    finally:
        await store.close()
    return commits


def writer_main(dsn: str, rate: float, seconds: float, actors: int, out: Any) -> None:
    out.put(asyncio.run(write(dsn, rate, seconds, actors)))


# -- the projector side ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def busy_sessions(conn: asyncpg.Connection, samples: list[int], stop: asyncio.Event) -> None:
    """Other sessions on the server in a transaction (they hold the cluster-wide fence)."""
    query = """SELECT count(*) FROM pg_stat_activity
                WHERE state LIKE 'idle in transaction%' OR
                      (state = 'active' AND xact_start < now() - interval '50 ms'
                       AND pid <> pg_backend_pid())"""
    while not stop.is_set():
        samples.append(await conn.fetchval(query))
        await asyncio.sleep(0.1)


async def measure(dsn: str, args: argparse.Namespace) -> tuple[list[list[str]], list[list[str]]]:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.5, max_size=6)
    done: dict[str, dict[tuple[str, int], float]] = {}

    def recorder(name: str) -> Any:
        seen = done.setdefault(name, {})

        def after_commit(events: Sequence[RecordedEvent]) -> None:
            now = time.time()
            for e in events:
                seen[(e.stream_id, e.stream_version)] = now

        return after_commit

    service = Projections(store, dsn)
    for name, runner in service.runners.items():
        runner.after_commit = recorder(name)
    live = asyncio.create_task(service.run())
    baseline = asyncio.create_task(subscriber(store, done.setdefault(BASELINE, {})))
    monitor = await asyncpg.connect(dsn)
    samples: list[int] = []
    stop_monitor = asyncio.Event()
    sampler = asyncio.create_task(busy_sessions(monitor, samples, stop_monitor))
    try:
        await asyncio.sleep(0.5)  # leaders elected, subscriptions attached
        commits = await asyncio.to_thread(run_writer, dsn, args)
        total = sum(last - first + 1 for _, first, last, _ in commits)
        await caught_up(done, total)
    finally:
        stop_monitor.set()
        await sampler
        await monitor.close()
        service.stop()
        await live
        baseline.cancel()
    span = max(t for *_, t in commits) - min(t for *_, t in commits)
    rows = [lag_row(name, seen, commits, total, span, samples) for name, seen in done.items()]
    rebuilds = []
    for name in service.runners:
        started = time.perf_counter()
        [result] = await service.rebuild(name)
        took = time.perf_counter() - started
        rebuilds.append([name, f"{result.events:,}", f"{took:.2f}", f"{result.events / took:,.0f}"])
    await store.close()
    return rows, rebuilds


async def subscriber(store: PostgresEventStore, seen: dict[tuple[str, int], float]) -> None:
    """The baseline: when a plain subscriber of the store receives each event. What it
    waits (the fence, NOTIFY, the tailer) the projectors wait too, before doing any work."""
    async with store.subscribe(
        after=await store.head(), filters=Filters.of(categories="run")
    ) as events:
        async for e in events:
            seen[(e.stream_id, e.stream_version)] = time.time()


async def caught_up(done: dict[str, dict[Any, float]], total: int, within: float = 30) -> None:
    """Wait until every projector has committed ``total`` events (or give up)."""
    deadline = time.monotonic() + within
    # Polls: the counters are filled by callbacks that have no event to wait on.
    while any(len(seen) < total for seen in done.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def run_writer(dsn: str, args: argparse.Namespace) -> list[Commit]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=writer_main, args=(dsn, args.rate, args.seconds, args.actors, out))
    proc.start()
    commits: list[Commit] = out.get()
    proc.join()
    return commits


def lag_row(
    name: str,
    seen: dict[tuple[str, int], float],
    commits: list[Commit],
    total: int,
    span: float,
    samples: list[int],
) -> list[str]:
    lags = [
        (seen[(stream, v)] - at) * 1000
        for stream, first, last, at in commits
        for v in range(first, last + 1)
        if (stream, v) in seen
    ]
    p99 = percentile(lags, 99)
    verdict = "PASS" if p99 <= TARGET_P99_MS and len(lags) == total else "**FAIL**"
    if name == BASELINE:
        verdict = "(reference)"
    return [
        name,
        f"{total:,} in {span:.1f} s ({total / span:,.0f}/s)",
        f"{percentile(lags, 50):.1f}",
        f"{percentile(lags, 95):.1f}",
        f"{p99:.1f}",
        f"{max(lags):.1f}",
        f"{total - len(lags)}",
        f"max {max(samples, default=0)}, mean {sum(samples) / max(len(samples), 1):.2f}",
        verdict,
    ]


# -- report ------------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def admin(dsn: str, sql: str) -> None:
    for attempt in range(20):  # a busy shared server may have no connection slot free
        try:
            conn = await asyncpg.connect(dsn)
            break
        except asyncpg.TooManyConnectionsError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> str:
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    name = f"papayya_bench_{uuid.uuid4().hex[:10]}"
    await admin(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(admin_dsn, name)
        await migrate(dsn)
        lag_rows, rebuild_rows = await measure(dsn, args)
    finally:
        await admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    lag_header = [
        "projection", "events (achieved rate)", "p50 ms", "p95 ms", "p99 ms", "max ms",
        "missing", "busy sessions elsewhere", f"p99 <= {TARGET_P99_MS:.0f} ms",
    ]  # fmt: skip
    rebuild_header = ["rebuild", "events", "seconds", "events/s"]
    return (
        f"### Projection lag at {args.rate:,.0f} events/s for {args.seconds:.0f} s "
        f"({args.actors} concurrent runs)\n\n"
        f"- machine: nproc={os.cpu_count()}, {platform.machine()} {platform.system()}, "
        f"python {platform.python_version()}, asyncpg {asyncpg.__version__}\n\n"
        + markdown(lag_header, lag_rows)
        + "\n\n"
        + markdown(rebuild_header, rebuild_rows)
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to write")
    parser.add_argument("--actors", type=int, default=32, help="runs written concurrently")
    parser.add_argument("--quick", action="store_true", help="3 s instead of 10")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.seconds = 3.0
    print(asyncio.run(main(arguments)))
