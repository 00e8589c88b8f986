"""Run-state repository benchmark: what a runtime API call pays to read its run.

Run from the repo root: ``.venv/bin/python bench/runstates.py``. It creates a throw-away
database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local one), records runs
of 10, 200 and 1,000 checkpoint steps, and times, in the same run, the read before the
repository (the stream summary for the token check, then the whole stream read and folded) and
with it (``RunStates.find``: one read of the events after the cached version). Not a test.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

import asyncpg  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from papayya.commands import checkpoint, durable  # noqa: E402
from papayya.commands.durable import OpenRun  # noqa: E402
from papayya.domain.defaults import UNLIMITED  # noqa: E402
from papayya.runs import Runs, run_stream  # noqa: E402
from papayya.runstates import RunStates  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SIZES = (10, 200, 1000)
READS = 200


async def measure(store: PostgresEventStore) -> list[str]:
    runs, plain = RunStates(store), Runs(store)
    rows = []
    for steps in SIZES:
        spec = OpenRun(run_id=f"run{steps}", project_id="bench", agent="bench", defaults=UNLIMITED)
        state = (await durable.open_or_resume(runs, spec))[0].state
        for i in range(steps):
            state = await checkpoint.record_checkpoint(runs, state, f"t{i}", duration_ms=0)
        before, after = [], []
        for _ in range(READS):  # interleaved, so that load from elsewhere falls on both
            start = time.perf_counter()
            await store.summary(run_stream(state.run_id))
            await plain.load(state.run_id)
            before.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            await runs.find(state.run_id)
            after.append((time.perf_counter() - start) * 1000)
        b, a = statistics.median(before), statistics.median(after)
        rows.append(f"| {steps} | {b:.3f} | {a:.3f} | {b / a:.1f}x |")
    return rows


async def main() -> None:
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    name = f"bench_runstates_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
        await migrate(dsn)
        store = await PostgresEventStore.connect(dsn)
        try:
            rows = await measure(store)
        finally:
            await store.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    print(f"## A runtime API call's run read (median of {READS}; load {os.getloadavg()[0]:.1f})\n")
    print("| steps | before: summary + read + fold, ms | after: RunStates.find, ms | ratio |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
