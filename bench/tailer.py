"""The event hub's tailer in a worker: CPU spent following a busy installation.

Run from the repo root: ``.venv/bin/python bench/tailer.py [--commits N]``. A worker follows
only cancellations and ends (``workers.worker.STOPPING``) through one subscription, but its
store's tailer is woken by every commit of the installation. Here a child process appends
runs shaped like the e2e benchmark's (queued, started, a checkpoint's 3 events, completed: 5
commits, one stopping event) at a steady rate, while this process holds the worker's
subscription; the table is this process's CPU per appended run, for the tailer reading
every event (the baseline, as before: ``Filters()`` for its reads) and reading only what
its subscriptions want, each round alternating. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from eventstore.types import NO_FILTERS, Filters  # noqa: E402
from workers.worker import STOPPING  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
APPENDER = """
import asyncio, sys, time, uuid
sys.path.insert(0, sys.argv[3])
from eventstore.postgres import PostgresEventStore
from eventstore.types import NewEvent
async def main(dsn, runs):
    store = await PostgresEventStore.connect(dsn, notify=True)
    steps = [("RunQueued",), ("RunStarted",), ("StepStarted", "StepCompleted", "Checkpoint"),
             ("RunCompleted",)]
    async def one(i):
        stream, version = f"run-{uuid.uuid4().hex}", 0
        for batch in steps:
            events = [NewEvent(t, {"i": i, "pad": "x" * 200}) for t in batch]
            version = (await store.append(stream, events, version)).stream_version
    for start in range(0, runs, 8):
        await asyncio.gather(*(one(i) for i in range(start, min(runs, start + 8))))
    await store.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def follow(dsn: str, runs: int, narrow: bool, gather: float | None = None) -> float:
    """This process's CPU (ms) per appended run while following the worker's stopping events."""
    store = await PostgresEventStore.connect(dsn, min_size=1, max_size=4)
    if not narrow:  # the tailer before: every event, whatever its subscriptions want
        store.hub.wanted = lambda: NO_FILTERS  # type: ignore[method-assign]
    if gather is not None:
        store.hub.min_read_interval = gather
    filters = Filters.of(categories=["run"], types=sorted(STOPPING))
    seen = 0
    try:
        async with store.subscribe(after=await store.head(), filters=filters) as sub:

            async def count() -> None:
                nonlocal seen
                async for _ in sub:
                    seen += 1
                    if seen == runs:
                        return

            task = asyncio.create_task(count())
            await asyncio.sleep(0.2)  # attached (a benchmark's setup, not a test)
            before = os.times()
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", APPENDER, dsn, str(runs), str(ROOT)
            )
            await child.wait()
            await asyncio.wait_for(task, 60)
            after = os.times()
    finally:
        await store.close()
    return ((after.user - before.user) + (after.system - before.system)) / runs * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    name = f"papayya_bench_tailer_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    dsn = urlunsplit(urlsplit(base)._replace(path="/" + name))
    variants = {
        "every event (before)": (False, None),
        "what its subscriptions want": (True, None),
        "what they want, commits gathered for 50 ms": (True, 0.05),
    }
    results: dict[str, list[float]] = {v: [] for v in variants}
    load = os.getloadavg()[0]
    try:
        await migrate(dsn)
        for _ in range(args.rounds):
            for label, (narrow, gather) in variants.items():
                results[label].append(await follow(dsn, args.runs, narrow, gather))
    finally:
        conn = await asyncpg.connect(base)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()
    print(
        f"{args.rounds} alternating rounds of {args.runs} runs (5 commits each, 8 at a time) "
        f"appended by another process; load {load:.2f} -> {os.getloadavg()[0]:.2f}\n"
    )
    print("| the worker's tailer reads | CPU per run, ms (median) | rounds |")
    print("|---|---|---|")
    for label, values in results.items():
        print(f"| {label} | {statistics.median(values):.3f} | "
              f"{', '.join(f'{v:.3f}' for v in values)} |")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
