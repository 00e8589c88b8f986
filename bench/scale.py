"""Scale benchmark: do the list, usage, overview and metrics reads stay flat as runs pile up?

Run from the repo root: ``.venv/bin/python bench/scale.py [--sizes 10000,100000,1000000]``.
It creates a throw-away database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the
local one), migrates it and, for each size in turn (each builds on the last):

1. appends runs up to that size through the event store's batch append (one ``append`` of a
   run's whole history per call, ``--writers`` at once), with a realistic mix: 1-3 model-call
   steps over four models and twenty agents; completed, failed, cancelled, out of budget,
   resumed after a budget top-up and completed, still running or still queued; queued over the
   last ``--days`` days in time order (each size's new runs are spread over the whole period),
   so the recent windows hold a realistic share;
2. runs every projector to the head (``Projections.catch_up``) and VACUUMs and ANALYZEs, as
   autovacuum would have by then;
3. starts ``papayya api`` (no projectors, no workers) on the database and times each endpoint
   over real HTTP, one request at a time: ``--samples`` requests after three warm-ups, p50/p95.

``--before DIR`` also times a server started from another checkout on the same database (e.g.
``git archive <commit> | tar -x -C DIR``, the code before the aggregates), so the table holds
the before and after figures of the same data on the same machine (old code ignores the newer
tables). The requests go round robin over every endpoint of both servers, so a busy machine
weighs on all of them alike. Prints a Markdown table with the growth from the smallest size to
the largest and the machine's load. Targets (issue 15): p50 <= 50 ms for each endpoint at 1M
runs, and growth from 10k to 1M of at most 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script; also keeps bench/eventstore.py unseen

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from papayya.domain import events as ev  # noqa: E402
from papayya.readmodels.projects import create_key  # noqa: E402
from projections import Projections  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_P50_MS = 50.0
TARGET_GROWTH = 2.0
METRICS_TOKEN = "bench-metrics-token-" + "x" * 16
AGENTS = [f"agent-{n:02d}" for n in range(20)]
MODELS = [  # provider, model, micro-USD per call (a typical prompt and answer)
    ("openai", "gpt-4o-mini", 450),
    ("openai", "gpt-4o", 7_500),
    ("anthropic", "claude-3-5-haiku-latest", 2_400),
    ("anthropic", "claude-sonnet-4-0", 12_000),
]
# status: share of runs
MIX = [
    ("completed", 0.80),
    ("failed", 0.08),
    ("cancelled", 0.03),
    ("budget_exceeded", 0.04),
    ("resumed", 0.02),  # budget_exceeded, resumed with a higher budget, then completed
    ("running", 0.015),
    ("queued", 0.015),
]


def endpoints(cursor: str, runs_cursor: str) -> list[str]:
    return [
        "/v1/overview",
        "/v1/overview?window=1440",
        "/v1/usage",
        "/v1/usage/breakdown",
        "/v1/usage/daily",
        "/v1/usage/runs",
        f"/v1/usage/runs?cursor={cursor}",
        "/v1/runs",
        f"/v1/runs?cursor={runs_cursor}",
        "/v1/runs?status=failed",
        "/v1/runs?agent_id=agent-07",
        "/v1/agents",
        "/metrics",
    ]


# -- building runs -----------------------------------------------------------------------------


def run_events(rng: random.Random, run_id: str, project: str, t: datetime) -> list[Any]:
    """One run's whole history, dated: queued at ``t``."""
    status = rng.choices([s for s, _ in MIX], [w for _, w in MIX])[0]
    agent = rng.choice(AGENTS)
    events: list[Any] = [ev.RunQueued(run_id=run_id, project_id=project, agent_id=agent, at=t)]
    if status == "queued":
        return events
    step = 0

    def attempt(n: int, steps: int) -> None:
        nonlocal t, step
        t += timedelta(seconds=rng.uniform(0.05, 2))
        events.append(ev.RunStarted(attempt=n, at=t))
        for _ in range(steps):
            provider, model, cost = rng.choice(MODELS)
            events.append(ev.StepStarted(step_number=step, step_type="tool_call", at=t))
            took = rng.lognormvariate(1.0, 0.8)  # seconds, median e
            t += timedelta(seconds=took)
            events.append(
                ev.LlmCallRecorded(
                    step_number=step,
                    provider=provider,
                    model=model,
                    fingerprint=f"f{step}",
                    input_tokens=rng.randint(400, 4000),
                    cached_input_tokens=rng.randint(0, 400),
                    output_tokens=rng.randint(50, 800),
                    cost_micro_usd=int(cost * rng.uniform(0.5, 2)),
                    at=t,
                )
            )
            events.append(ev.StepCompleted(step_number=step, duration_ms=took * 1000, at=t))
            step += 1

    attempt(1, rng.randint(1, 3))
    if status == "running":
        return events
    t += timedelta(milliseconds=rng.uniform(1, 50))
    if status in ("budget_exceeded", "resumed"):
        events.append(ev.BudgetExceeded(limit="usd", at=t))
        if status == "budget_exceeded":
            return events
        t += timedelta(minutes=rng.uniform(1, 120))
        events.append(ev.RunResumed(budget_micro_usd=10**7, at=t))
        attempt(2, 1)
        events.append(ev.RunCompleted(output={"answer": "done"}, at=t))
    elif status == "completed":
        events.append(ev.RunCompleted(output={"answer": "done"}, at=t))
    elif status == "failed":
        events.append(ev.RunFailed(code=rng.choice(["tool_error", "max_steps_exceeded"]), at=t))
    else:
        events.append(ev.RunCancelled(reason="user", at=t))
    return events


async def build(
    store: PostgresEventStore, project: str, start: int, stop: int, args: argparse.Namespace
) -> int:
    """Append runs ``start`` to ``stop`` - 1; returns the events appended."""
    now = datetime.now(UTC)
    next_run, appended = start, 0
    began = time.perf_counter()

    async def writer() -> None:
        nonlocal next_run, appended
        while next_run < stop:
            n = next_run
            next_run += 1
            rng = random.Random(n)
            # Each size's runs are appended in the order they were queued, spread evenly over
            # the last ``days`` days, as a live system appends them (time order is what keeps
            # a recent window's rows together on disk).
            ago = args.days * 86400 * (1 - (n - start + rng.random()) / (stop - start))
            events = run_events(rng, f"r{n:07d}", project, now - timedelta(seconds=ago))
            await store.append(f"run-r{n:07d}", [ev.to_new_event(e) for e in events], "no_stream")
            appended += len(events)
            if n % 20_000 == 0 and n > start:
                rate = (n - start) / (time.perf_counter() - began)
                progress(f"  appended {n - start:,} runs ({rate:,.0f} runs/s)")

    await asyncio.gather(*(writer() for _ in range(args.writers)))
    return appended


# -- timing ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def api_server(root: Path, dsn: str, key: str) -> AsyncIterator[str]:
    """``papayya api`` from the checkout at ``root``, on a free port, until the block ends."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "PAPAYYA_DATABASE_URL": dsn,
        "PAPAYYA_BOOTSTRAP_API_KEY": key,
        "PAPAYYA_METRICS_TOKEN": METRICS_TOKEN,
    }
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(  # noqa: ASYNC220  (started before anything is measured)
            [sys.executable, "-m", "server.cli", "api", "--port", str(port)],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            async with aiohttp.ClientSession() as session:
                while True:
                    if proc.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"the server exited: {log.read().decode()[-2000:]}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(f"{url}/healthz") as resp:
                            if resp.status == 200:
                                break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the server did not start")
                    await asyncio.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def headers(path: str, key: str) -> dict[str, str]:
    token = METRICS_TOKEN if path == "/metrics" else key
    return {"Authorization": f"Bearer {token}"}


async def first_cursors(http: aiohttp.ClientSession, url: str, key: str) -> tuple[str, str]:
    """The second pages' cursors (the old /v1/usage/runs has none: it then reads page one)."""
    return await next_cursor(http, f"{url}/v1/usage/runs", key), await next_cursor(
        http, f"{url}/v1/runs", key
    )


async def next_cursor(http: aiohttp.ClientSession, url: str, key: str) -> str:
    """A list's next cursor: the ``X-Next-Cursor`` header of a bare-array list, or the
    ``next_cursor`` of a wrapped one (a server from before the published SDK's wire)."""
    async with http.get(url, headers=headers("", key)) as resp:
        body = await resp.json()
        found = resp.headers.get("X-Next-Cursor")
    if found is None and isinstance(body, dict):
        found = body.get("next_cursor")
    return found or ""


async def time_endpoints(
    servers: dict[str, str], key: str, samples: int
) -> dict[str, dict[str, tuple[float, float]]]:
    """p50 and p95 in milliseconds per server and endpoint, one request at a time. Each round
    asks every endpoint of every server once, so a burst of load from the rest of the (shared)
    machine weighs on all of them alike rather than on whichever was being timed."""
    took: dict[str, dict[str, list[float]]] = {which: {} for which in servers}
    async with aiohttp.ClientSession() as http:
        paths = {
            which: endpoints(*await first_cursors(http, url, key)) for which, url in servers.items()
        }
        for i in range(samples + 3):
            for n in range(len(endpoints("", ""))):
                for which, url in servers.items():
                    path = paths[which][n]
                    began = time.perf_counter()
                    async with http.get(url + path, headers=headers(path, key)) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"{path}: {resp.status} {await resp.text()}")
                    if i >= 3:
                        took[which].setdefault(label(path), []).append(
                            (time.perf_counter() - began) * 1000
                        )
    return {
        which: {path: summary(values) for path, values in found.items()}
        for which, found in took.items()
    }


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)]


def label(path: str) -> str:
    return path.split("cursor=")[0] + "cursor=…" if "cursor=" in path else path


# -- the run -----------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


async def admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def project_of(url: str, key: str) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/projects", headers=headers("", key)) as resp:
            project: str = (await resp.json())[0]["id"]
            return project


async def measure(dsn: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    key = "cpk_bench_" + uuid.uuid4().hex
    if args.database is None:
        async with api_server(ROOT, dsn, key) as url:  # bootstraps the project and its key
            project = await project_of(url, key)
    else:  # a kept database: a new key for its first project
        conn = await asyncpg.connect(dsn)
        try:
            project = await conn.fetchval("SELECT project_id FROM projects ORDER BY created_at")
            await create_key(conn, project, "bench", key)
        finally:
            await conn.close()
    store = await PostgresEventStore.connect(dsn, max_size=args.writers + 2, notify=False)
    results: list[dict[str, Any]] = []
    # A kept database (--database) goes on from the runs it holds.
    built = int(await store.pool.fetchval("SELECT count(*) FROM streams WHERE category = 'run'"))
    try:
        for size in args.sizes:
            progress(f"building {size:,} runs")
            began = time.perf_counter()
            events = await build(store, project, built, size, args)
            append_s = time.perf_counter() - began
            built = size
            began = time.perf_counter()
            await store.wait_visible(timeout=120)
            processed = await Projections(store, dsn, batch_size=2000).catch_up()
            project_s = time.perf_counter() - began
            conn = await asyncpg.connect(dsn)
            try:
                # The steady state of a live system, where autovacuum keeps up with the
                # projectors' updates; a bulk catch-up outpaces it (costs held 160k dead rows
                # for 5k live ones at 1M runs, tripling the usage reads).
                await conn.execute("VACUUM ANALYZE")
                db_mb = await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20
                total_events = await conn.fetchval("SELECT count(*) FROM events")
            finally:
                await conn.close()
            progress(
                f"  {events:,} events appended in {append_s:.0f} s, projected "
                f"{sum(processed.values()):,} in {project_s:.0f} s"
            )
            row: dict[str, Any] = {
                "size": size, "events": total_events, "db_mb": db_mb, "load": os.getloadavg(),
                "append_s": append_s, "project_s": project_s,
            }  # fmt: skip
            async with contextlib.AsyncExitStack() as servers:
                urls = {"after": await servers.enter_async_context(api_server(ROOT, dsn, key))}
                if args.before is not None and size <= args.before_max:
                    before = api_server(args.before, dsn, key)
                    urls["before"] = await servers.enter_async_context(before)
                row.update(await time_endpoints(urls, key, args.samples))
            results.append(row)
            progress(table(results, args))
    finally:
        await store.close()
    return results


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    first = results[0]
    sizes = [f"{r['size']:,} runs p50 / p95" for r in results]
    head = ["endpoint", *sizes, "growth p50 (smallest → largest timed)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for which in ("before", "after"):
        if which not in first:
            continue
        timed = [r for r in results if which in r]
        for path in first[which]:
            cells = [
                f"{r[which][path][0]:.1f} / {r[which][path][1]:.1f} ms" if which in r else "—"
                for r in results
            ]
            growth = timed[-1][which][path][0] / first[which][path][0]
            lines.append(f"| {which}: `{path}` | " + " | ".join(cells) + f" | {growth:.2f}× |")
    lines.append("")
    for r in results:
        lines.append(
            f"- {r['size']:,} runs: {r['events']:,} events, {r['db_mb']:,.0f} MB; appended in "
            f"{r['append_s']:.0f} s, projected in {r['project_s']:.0f} s; load average while "
            f"measuring {r['load'][0]:.2f} {r['load'][1]:.2f} {r['load'][2]:.2f}"
        )
    lines.append(
        "- `/v1/agents` reads a table that does not grow with the runs: its growth is the"
        " machine's noise"
    )
    lines.append(
        f"- targets at the largest size: p50 ≤ {TARGET_P50_MS:.0f} ms, growth ≤ {TARGET_GROWTH}×;"
        f" {os.cpu_count()} CPUs, Python {platform.python_version()}, {args.samples} samples"
    )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> str:
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    name = args.database or f"papayya_scale_{uuid.uuid4().hex[:10]}"
    if args.database is None:
        await admin(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(admin_dsn, name)
        await migrate(dsn)
        return table(await measure(dsn, args), args)
    finally:
        if args.keep or args.database is not None:
            progress(f"kept database {name}")
        else:
            await admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,100000,1000000",
        type=lambda s: sorted(int(n) for n in s.split(",")), help="runs, comma-separated",
    )  # fmt: skip
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--writers", type=int, default=8, help="concurrent appenders")
    parser.add_argument("--days", type=float, default=60.0, help="runs spread over these days")
    parser.add_argument("--before", type=Path, help="also time a server from this checkout")
    parser.add_argument(
        "--before-max", type=int, default=100_000,
        help="time the --before server only up to this size (its scans take seconds beyond)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--database", help="use (and keep) this database, going on from the runs it holds"
    )
    args = parser.parse_args()
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
