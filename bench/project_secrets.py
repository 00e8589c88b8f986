"""What project secrets add to an attempt's launch: the worker reads the project's sealed
secrets (one indexed query) and opens them (AES-256-GCM) before it starts the agent.

Run from the repo root: ``.venv/bin/python bench/project_secrets.py [--dsn DSN] [--reads N]``.
It makes a scratch database, a project with 0, 1, 10 and 100 secrets of 64 bytes, and times
``ProjectSecrets.environment`` N times each. The baseline, measured in the same run on the
same pool, is ``SELECT 1``: a round trip that reads nothing. Prints a Markdown table. Not a
test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from papayya.readmodels.projectsecrets import ProjectSecrets  # noqa: E402
from papayya.secretbox import SecretBox, new_key, parse_key  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def timed(reads: int, call: object) -> list[float]:
    samples = []
    for _ in range(reads):
        start = time.perf_counter()
        await call()  # type: ignore[operator]
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


async def main(admin: str, reads: int) -> None:
    import asyncpg

    name = f"bench_secrets_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        await migrate(dsn)
        store = await PostgresEventStore.connect(dsn)
        try:
            secrets = ProjectSecrets(store, SecretBox(parse_key(new_key())))
            rows = [("SELECT 1 (baseline)", lambda: store.pool.fetchval("SELECT 1"))]
            for count in (0, 1, 10, 100):
                project = f"proj_bench_{count}"
                await store.pool.execute(
                    "INSERT INTO projects (project_id, name) VALUES ($1, $1)", project
                )
                for i in range(count):
                    await secrets.set(project, f"SECRET_{i}", "v" * 64)
                rows.append(
                    (f"environment(), {count} secrets",
                     lambda p=project: secrets.environment(p))  # type: ignore[misc]
                )  # fmt: skip
            load = os.getloadavg()[0]
            print(f"| what | median µs | p95 µs | ({reads} reads each; load {load:.1f}) |")
            print("|---|---|---|---|")
            for label, call in rows:
                for _ in range(20):  # warm the pool and the plan cache
                    await call()
                samples = sorted(await timed(reads, call))
                p95 = samples[int(len(samples) * 0.95) - 1]
                print(f"| {label} | {statistics.median(samples):.0f} | {p95:.0f} | |")
        finally:
            await store.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=ADMIN, help="an admin connection (makes a database)")
    parser.add_argument("--reads", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.reads))
