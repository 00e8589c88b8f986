"""API benchmark: many SSE subscribers on one run (``GET /v1/runs/{id}/events``).

Run from the repo root: ``.venv/bin/python bench/api.py [--quick]``. It creates a throw-away
database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local one), starts
``papayya server`` on it as a subprocess on a free port, measures, stops it, drops the database
and prints a Markdown table. Not a test: ``make test`` never runs it, and its numbers depend on
the machine (it prints the machine info alongside them).

Measurement: ``--subscribers`` (1,000) clients, spread over ``--clients`` processes, follow one
run while this process appends ``--steps`` (100) checkpoint steps at a steady pace straight to
the event store, as a worker would. Delivery latency is the time from the append's return to
the step's arrival at a client (``time.monotonic`` is one clock for every process on Linux),
over every (subscriber, step) pair. The server's RSS is sampled with psutil throughout.
Targets: every subscriber receives every step and the terminal event; p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402

from eventstore.embedded import EmbeddedPostgres  # noqa: E402
from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from papayya.domain import events as ev  # noqa: E402
from papayya.runs import Runs  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
P99_TARGET_MS = 200.0
RESULT_MARK = "API-BENCH-CLIENT "
STEP_PREFIX = b"event: step\nid: "


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- client processes ----------------------------------------------------------------------------


async def follow(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], ready: asyncio.Event
) -> dict[str, Any]:
    """One subscriber: arrival time of each step, and whether the terminal event came. It
    parses whole chunks rather than lines: the clients share the machine with the server, so
    the less CPU they take, the less they distort what is measured."""
    arrivals: dict[int, float] = {}
    terminal = False
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200, resp.status
        ready.set()
        rest = b""
        async for chunk in resp.content.iter_any():
            now = time.monotonic()
            *messages, rest = (rest + chunk).split(b"\n\n")
            for message in messages:
                if message.startswith(STEP_PREFIX):
                    end = message.index(b"\n", len(STEP_PREFIX))
                    arrivals.setdefault(int(message[len(STEP_PREFIX) : end]), now)
                elif message.startswith(b"event: terminal"):
                    terminal = True
            if terminal:
                break
    return {"arrivals": arrivals, "terminal": terminal}


async def client_main(url: str, key: str, count: int) -> None:
    """A client process: open ``count`` streams, say READY, wait for all to end, report."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        readies = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(follow(session, url, {"X-Api-Key": key}, r)) for r in readies]
        await asyncio.gather(*(r.wait() for r in readies))
        print("READY", flush=True)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    report = []
    for result in results:
        if isinstance(result, BaseException):
            report.append({"arrivals": {}, "terminal": False, "error": repr(result)})
        else:
            report.append(result)
    print(RESULT_MARK + json.dumps(report), flush=True)


# -- the server ----------------------------------------------------------------------------------


class Neighbours:
    """How often other sessions on the database server hold a transaction id: any such
    transaction holds the event store's read fence back, which delays delivery (a shared
    server running test suites, say)."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    async def sample(self, dsn: str, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                busy = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL"
                    " AND datname IS DISTINCT FROM current_database()"
                )
                self.samples.append(int(busy))
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def describe(self) -> str:
        if not self.samples:
            return "not sampled"
        busy = sum(1 for n in self.samples if n) / len(self.samples)
        return f"{busy:.0%} of {len(self.samples)} samples (at most {max(self.samples)})"


class RssSampler:
    """Samples the server's resident set size every 50 ms on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        rss = int(self.process.memory_info().rss)
        self.peak = max(self.peak, rss)
        return rss

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.now()
            except psutil.Error:
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def start_server(
    dsn: str, key: str, log: Any, profile: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PAPAYYA_DATABASE_URL": dsn, "PAPAYYA_BOOTSTRAP_API_KEY": key}
    python = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    proc = subprocess.Popen(  # noqa: ASYNC220  (started once, before anything is measured)
        [*python, "-m", "server.cli", "server", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            await asyncio.sleep(0.1)


# -- the measurement -----------------------------------------------------------------------------


async def measure(dsn: str, args: argparse.Namespace) -> str:
    key = "cpk_bench_" + uuid.uuid4().hex
    with tempfile.TemporaryFile() as log:
        proc, url = await start_server(dsn, key, log, args.cprofile)
        try:
            return await _measure(dsn, url, key, proc, args)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _measure(
    dsn: str, url: str, key: str, proc: subprocess.Popen[bytes], args: argparse.Namespace
) -> str:
    store = await PostgresEventStore.connect(dsn)
    runs = Runs(store)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/v1/projects", headers={"X-Api-Key": key}) as resp:
                project = (await resp.json())[0]["id"]
        state = await runs.append(
            None, [ev.RunQueued(run_id="bench", project_id=project, agent_id="bench")]
        )
        state = await runs.append(state, [ev.RunStarted(attempt=1)])
        load_before = os.getloadavg()[0]
        rss = RssSampler(proc.pid)
        await asyncio.sleep(0.5)
        rss_before = rss.now()

        progress(f"connecting {args.subscribers} subscribers from {args.clients} processes")
        started = time.monotonic()
        clients = await start_clients(f"{url}/v1/runs/bench/events", key, args)
        await asyncio.gather(*(wait_ready(c) for c in clients))
        connect_seconds = time.monotonic() - started
        await asyncio.sleep(0.5)
        rss_connected = rss.now()

        progress(f"appending {args.steps} steps, one every {args.interval * 1000:.0f} ms")
        neighbours, stop = Neighbours(), asyncio.Event()
        sampler = asyncio.create_task(neighbours.sample(dsn, stop))
        appended: dict[int, float] = {}
        next_at = time.monotonic()
        for n in range(args.steps):
            label = f"task-{n}"
            state = await runs.append(
                state,
                [
                    ev.StepStarted(step_number=n, step_type="checkpoint", label=label),
                    ev.CheckpointSaved(
                        step_number=n, label=label, fingerprint=label, result={"n": n}
                    ),
                    ev.StepCompleted(step_number=n, duration_ms=1.0),
                ],
            )
            appended[n] = time.monotonic()
            next_at += args.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await runs.append(state, [ev.RunCompleted(output="done")])
        stop.set()
        await sampler
        load_after = os.getloadavg()[0]
        reports = [r for c in clients for r in await collect(c)]
        await asyncio.sleep(1.0)
        rss_after = rss.now()
        rss.stop()
    finally:
        await store.close()

    latencies: list[float] = []
    complete = errors = 0
    for report in reports:
        arrivals = {int(k): v for k, v in report["arrivals"].items()}
        errors += "error" in report
        if report["terminal"] and len(arrivals) == args.steps:
            complete += 1
        latencies.extend(max(0.0, arrivals[n] - appended[n]) * 1000 for n in arrivals)
    delivered = len(latencies)
    expected = args.subscribers * args.steps
    p99 = percentile(latencies, 99) if latencies else float("inf")
    mib = 1024 * 1024
    ok = complete == args.subscribers and delivered == expected and p99 <= P99_TARGET_MS
    rows = [
        ("subscribers (client processes)", f"{args.subscribers} ({args.clients})"),
        ("steps appended (pace)", f"{args.steps} (one per {args.interval * 1000:.0f} ms)"),
        ("all connected in", f"{connect_seconds:.2f} s"),
        ("subscribers with every step + terminal", f"{complete} / {args.subscribers}"),
        ("step deliveries", f"{delivered} / {expected}" + (f", {errors} errors" if errors else "")),
        ("latency p50 / p95",
         f"{percentile(latencies, 50):.1f} / {percentile(latencies, 95):.1f} ms"),
        (f"latency p99 (target <= {P99_TARGET_MS:.0f} ms)", f"{p99:.1f} ms"),
        ("latency max", f"{max(latencies):.1f} ms"),
        ("server RSS before subscribers", f"{rss_before / mib:.1f} MiB"),
        (
            "server RSS with all connected",
            f"{rss_connected / mib:.1f} MiB "
            f"(+{(rss_connected - rss_before) / args.subscribers / 1024:.1f} KiB per subscriber)",
        ),
        ("server RSS peak while streaming", f"{rss.peak / mib:.1f} MiB"),
        ("server RSS after all closed", f"{rss_after / mib:.1f} MiB"),
        ("other sessions holding a transaction id", neighbours.describe()),
        ("machine load average (1 min) at start / end", f"{load_before:.1f} / {load_after:.1f}"),
        ("result", "PASS" if ok else "FAIL"),
    ]  # fmt: skip
    lines = ["| measurement | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


async def start_clients(
    url: str, key: str, args: argparse.Namespace
) -> list[asyncio.subprocess.Process]:
    share = [args.subscribers // args.clients] * args.clients
    for i in range(args.subscribers % args.clients):
        share[i] += 1
    return [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", url, key, str(count),
            stdout=asyncio.subprocess.PIPE,
        )
        for count in share
    ]  # fmt: skip


async def wait_ready(client: asyncio.subprocess.Process) -> None:
    assert client.stdout is not None
    line = await client.stdout.readline()
    if line.strip() != b"READY":
        raise RuntimeError(f"a client failed to connect: {line!r}")


async def collect(client: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    out, _ = await client.communicate()
    for line in out.decode().splitlines():
        if line.startswith(RESULT_MARK):
            reports: list[dict[str, Any]] = json.loads(line[len(RESULT_MARK) :])
            return reports
    raise RuntimeError("a client reported nothing")


async def run(args: argparse.Namespace, admin_dsn: str) -> str:
    name = f"papayya_bench_{uuid.uuid4().hex[:10]}"
    await admin(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(admin_dsn, name)
        await migrate(dsn)
        return await measure(dsn, args)
    finally:
        await admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--client":
        asyncio.run(client_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between steps")
    parser.add_argument("--quick", action="store_true", help="100 subscribers, 20 steps")
    parser.add_argument(
        "--embedded", action="store_true", help="run on a private embedded Postgres"
    )
    parser.add_argument("--cprofile", metavar="FILE", help="profile the server into FILE")
    args = parser.parse_args()
    if args.quick:
        args.subscribers, args.steps, args.clients = 100, 20, 1
    if args.embedded:
        # A Postgres of our own: no other sessions' transactions hold the read fence back.
        with tempfile.TemporaryDirectory(prefix="papayya-bench-pg-") as tmp:
            embedded = EmbeddedPostgres(Path(tmp))
            try:
                table = asyncio.run(run(args, embedded.start()))
            finally:
                embedded.stop()
        where = "a private embedded Postgres"
    else:
        admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
        table = asyncio.run(run(args, admin_dsn))
        where = "the shared Postgres of PAPAYYA_BENCH_DATABASE_URL (default: local)"
    cpu = platform.processor() or platform.machine()
    print("\n### SSE fan-out (`GET /v1/runs/{id}/events`)\n")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu}), {platform.system()}")
    print(f"Database: {where}.")
    print()
    print(table)


if __name__ == "__main__":
    main()
