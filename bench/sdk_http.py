"""SDK HTTP-mode benchmark: the per-task overhead of ``run.task`` through the durable
checkpoints API, beside direct mode, in the same process and on the same database.

Run from the repo root: ``.venv/bin/python bench/sdk_http.py [--tasks N] [--rounds R]``. It
creates a throw-away database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the
local one), starts the aiohttp app in this process (on its own thread and loop, on a free
loopback port), measures, drops the database and prints a Markdown table. Not a test.

Each round times N no-op tasks in a fresh run, once per mode, the modes interleaved so that
load from elsewhere falls on both alike. A task's overhead is its wall time minus the no-op's
own. Target: HTTP mode median <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WARMUP_TASKS = 50
TARGET_MEDIAN_S = 2e-3


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def progress(message: str) -> None:
    print(f"[sdk-http-bench] {message}", file=sys.stderr, flush=True)


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def admin(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Server:
    """The control plane on a thread of its own, as ``papayya server`` would run it."""

    def __init__(self, dsn: str, key: str) -> None:
        self.dsn = dsn
        self.key = key
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bench-server", daemon=True)
        self._runner: Any = None

    def __enter__(self) -> Server:
        self._thread.start()
        if not self._ready.wait(60) or not self.url:
            raise RuntimeError("the server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        finally:
            self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _start(self) -> None:
        from aiohttp import web

        from papayya.config import Config
        from server.app import init_app

        os.environ["PAPAYYA_BOOTSTRAP_API_KEY"] = self.key
        app = init_app(Config(database_url=self.dsn), self.dsn)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"


class NoOp:
    """A no-op task that measures its own time, so it can be subtracted."""

    def __init__(self) -> None:
        self.own = 0.0

    def __call__(self) -> None:
        t = time.perf_counter()
        self.own = time.perf_counter() - t


def time_tasks(run: Any, n: int) -> list[float]:
    fn = NoOp()
    # Wrapped once, called n times (as a DBOS step is decorated once): each call is a step,
    # numbered noop, noop#2…
    task = run.task("noop", fn)
    clock = time.perf_counter
    out = []
    for _ in range(n):
        t = clock()
        task()
        out.append(clock() - t - fn.own)
    return out


def time_round_trips(client: Any, url: str, n: int) -> list[float]:
    """``GET /healthz`` from the SDK's loop through its session: the HTTP floor."""
    backend = client._http

    async def one() -> float:
        t = time.perf_counter()
        async with backend._session.get(url + "/healthz") as resp:
            await resp.read()
        return time.perf_counter() - t

    return [client._loop.call(one()) for _ in range(n)]


def measure(dsn: str, args: argparse.Namespace) -> str:
    from papayya.sdk import papayya

    key = "cpk_bench_" + uuid.uuid4().hex
    n = args.tasks
    from bench.limits import lift_limits

    asyncio.run(lift_limits(dsn))
    with Server(dsn, key) as server:
        direct = papayya(dsn)
        http = papayya(base_url=server.url, api_key=key)
        try:
            progress(f"warming up; then {args.rounds} round(s) of {n} tasks per mode")
            for client in (direct, http):
                time_tasks(client.run("bench-warmup"), WARMUP_TASKS)
            times: dict[str, list[float]] = {"direct": [], "http": []}
            for r in range(args.rounds):
                progress(f"round {r + 1}")
                times["direct"] += time_tasks(direct.run("bench"), n)
                times["http"] += time_tasks(http.run("bench"), n)
            floor = time_round_trips(http, server.url, n)
            at_end = {}
            for mode, client in (("direct", direct), ("http", http)):
                progress(f"{mode}: one run of {args.long} tasks")
                long_run = client.run("bench-long")
                time_tasks(long_run, args.long - n)
                at_end[mode] = time_tasks(long_run, n)
        finally:
            http.close()
            direct.close()

    def row(name: str, values: list[float]) -> str:
        return (
            f"| {name} | {len(values)} | {ms(statistics.median(values))} | "
            f"{ms(percentile(values, 99))} | {ms(min(values))} |"
        )

    median_http = statistics.median(times["http"])
    extra = median_http - statistics.median(times["direct"])
    lines = [
        "## SDK HTTP mode vs direct mode: per-task overhead of `run.task` (no-op task)",
        "",
        f"- python {platform.python_version()}, {platform.machine()} {platform.system()}, "
        f"nproc={os.cpu_count()}; server in-process on loopback, Postgres at "
        f"{urlsplit(dsn).hostname}",
        "",
        "| mode | tasks | median ms | p99 ms | min ms |",
        "|---|---|---|---|---|",
        row("direct (`papayya(dsn)`)", times["direct"]),
        row("HTTP (`papayya(base_url=…, api_key=…)`)", times["http"]),
        row(f"direct, tasks {args.long - n + 1}-{args.long} of one run", at_end["direct"]),
        row(f"HTTP, tasks {args.long - n + 1}-{args.long} of one run", at_end["http"]),
        row("(floor) `GET /healthz` round trip on the SDK's session", floor),
        "",
        f"- HTTP mode costs {ms(extra)} ms more than direct mode per task (medians)",
        f"- target HTTP median <= {ms(TARGET_MEDIAN_S)} ms: "
        f"{'met' if median_http <= TARGET_MEDIAN_S else 'MISSED'} ({ms(median_http)} ms)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per round, >= 500")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--long", type=int, default=3000, help="steps of the long run")
    args = parser.parse_args()
    if args.tasks < 500:
        parser.error("--tasks must be at least 500")
    args.long = max(args.long, args.tasks)
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    name = f"papayya_bench_http_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    try:
        report = measure(with_database(admin_dsn, name), args)
    finally:
        asyncio.run(admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(report)


if __name__ == "__main__":
    main()
