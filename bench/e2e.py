"""End-to-end benchmark of cloud execution: no-op agent runs from API trigger to `completed`
with the process runtime, beside the same no-op job through `arq` (a plain Redis job queue
with no durability), in the same run, on the same Redis; and recovery after a worker kill.

Run from the repo root: ``.venv/bin/python bench/e2e.py [--runs N] [--concurrency C]``. It
creates a throw-away database on ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local server),
uses the Redis at ``PAPAYYA_BENCH_REDIS_URL`` (default 127.0.0.1:6379) under queue names of
its own, starts ``papayya server --concurrency 0`` (API, dispatcher, sweeper, projectors)
and ``papayya worker`` as processes, and prints a Markdown table. Not a test.

Papayya's runs are event-sourced: every transition (queued, started, the step, completed) is
an appended event, and each run gets an OS process of its own (forked from the deployment's
warm fork server). Target: >= 0.5x arq's throughput; recovery after a worker kill <= lease
expiry + 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
LEASE_SECONDS = 10.0
HEARTBEAT_SECONDS = 2.0

NOOP_AGENT = """
from papayya import agent, current_run

@agent
def noop(task):
    return current_run().task("noop", lambda: task)
"""

SLEEPER_AGENT = """
import time
from papayya import agent, current_run

@agent
def sleeper(task):
    for i in range(100):
        current_run().task(f"nap{i}", lambda: time.sleep(0.2))
    return "woke"
"""

ARQ_WORKER = """
from arq.connections import RedisSettings

async def noop(ctx, value):
    return value

class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn({url!r})
    queue_name = {queue!r}
    max_jobs = {concurrency}
    poll_delay = 0.01
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def progress(message: str) -> None:
    print(f"[e2e-bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def admin(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Papayya:
    """``papayya server --concurrency 0`` and ``papayya worker`` processes on one database."""

    def __init__(self, dsn: str, redis: str, tmp: Path, concurrency: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = "cpk_bench_" + uuid.uuid4().hex
        self.tmp = tmp
        self.concurrency = concurrency
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")},
            "PAPAYYA_DATABASE_URL": dsn,
            "PAPAYYA_REDIS_URL": redis,
            "PAPAYYA_QUEUE_NAME": f"papayya:bench:{uuid.uuid4().hex}",
            "PAPAYYA_BOOTSTRAP_API_KEY": self.key,
            "PAPAYYA_CONTROL_URL": self.url,
            "PAPAYYA_DATA_DIR": str(tmp / "data"),
            "PAPAYYA_PROCESS_RUNTIME": "all",  # the benchmark's agents are modules on this machine
            "PAPAYYA_LEASE_SECONDS": str(LEASE_SECONDS),
            "PAPAYYA_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "PYTHONPATH": str(ROOT),
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_server(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "server", "--port", str(self.port),
             "--concurrency", "0"],
            env=self.env, cwd=self.tmp, stdout=subprocess.DEVNULL,
            stderr=(self.tmp / "server.log").open("wb"),
        )  # fmt: skip

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "worker", "--runtime", "process",
             "--concurrency", str(self.concurrency)],
            env=self.env, cwd=self.tmp, stdout=log, stderr=log,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


async def call(http: Any, p: Papayya, method: str, path: str, body: Any = None) -> Any:
    async with http.request(method, p.url + path, json=body, headers={"X-Api-Key": p.key}) as r:
        data = await r.json(content_type=None)
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data}")
        return data


async def wait_healthy(http: Any, p: Papayya) -> None:
    for _ in range(600):
        try:
            async with http.get(p.url + "/readyz") as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not start")


async def statuses(pool: Any, run_ids: list[str]) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT substr(stream_id, 5) AS id, summary->>'status' AS status FROM stream_summaries"
        " WHERE stream_id = ANY($1::text[])",
        ["run-" + r for r in run_ids],
    )
    return {r["id"]: r["status"] for r in rows}


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU time used so far by our processes (with their waited-for children), and by every
    Postgres and Redis server process on the machine."""
    import psutil

    found = {"papayya": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            found["papayya"] += t.user + t.system + t.children_user + t.children_system
            for child in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    found["papayya"] += c.user + c.system
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        kind = "postgres" if name.startswith("postgres") else "redis" if "redis" in name else ""
        if kind:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                found[kind] += t.user + t.system
    return found


async def bench_papayya(http: Any, pool: Any, p: Papayya, runs: int) -> dict[str, float]:
    from papayya.runs import Runs

    agent = p.tmp / "noop_agent.py"
    agent.write_text(NOOP_AGENT)
    await call(http, p, "POST", "/v1/agents", {"name": "noop", "slug": "noop", "config": {}})
    await call(http, p, "POST", "/v1/agents/noop/deployments", {"entrypoint": str(agent)})
    # Warm up: the fork server loads, connections open.
    warm = [(await call(http, p, "POST", "/v1/agents/noop/runs", {"input": i}))["id"]
            for i in range(p.concurrency)]  # fmt: skip
    while set((await statuses(pool, warm)).values()) != {"completed"}:
        await asyncio.sleep(0.05)
    pids = [x.pid for x in [p.server, *p.workers] if x is not None]
    cpu_before = cpu_seconds(pids)
    started = time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def trigger(i: int) -> str:
        async with sem:
            return str((await call(http, p, "POST", "/v1/agents/noop/runs", {"input": i}))["id"])

    run_ids = await asyncio.gather(*(trigger(i) for i in range(runs)))
    while True:
        found = await statuses(pool, run_ids)
        if sum(s in ("completed", "failed") for s in found.values()) == runs:
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(pids)
    cpu = {k: (cpu_after[k] - cpu_before[k]) / runs * 1e3 for k in cpu_after}
    failed = sum(s != "completed" for s in found.values())
    # Latency on an otherwise idle system: one run at a time.
    single = []
    for i in range(30):
        sent = time.perf_counter()
        run_id = (await call(http, p, "POST", "/v1/agents/noop/runs", {"input": i}))["id"]
        while (await statuses(pool, [run_id])).get(run_id) != "completed":
            await asyncio.sleep(0.002)
        single.append((run_id, time.perf_counter() - sent))
    latencies = []
    from eventstore.postgres import PostgresEventStore
    from papayya.domain import events as ev

    store = await PostgresEventStore.connect(p.env["PAPAYYA_DATABASE_URL"])
    try:
        runs_api = Runs(store)
        for run_id, _ in single:
            events = await runs_api.events(run_id)
            queued = events[0].at
            step = next(e.at for e in events if isinstance(e, ev.StepStarted))
            assert queued is not None and step is not None
            latencies.append((step - queued).total_seconds())
    finally:
        await store.close()
    done = [took for _, took in single]
    return {"throughput": runs / elapsed, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "failed": failed,
            "done_p50": percentile(done, 50), "done_p99": percentile(done, 99),
            "cpu_papayya": cpu["papayya"], "cpu_postgres": cpu["postgres"],
            "cpu_redis": cpu["redis"]}  # fmt: skip


async def bench_arq(redis: str, tmp: Path, runs: int, concurrency: int) -> dict[str, float]:
    from arq import create_pool
    from arq.connections import RedisSettings

    queue = f"arq:bench:{uuid.uuid4().hex}"
    (tmp / "arq_bench_worker.py").write_text(
        ARQ_WORKER.format(url=redis, queue=queue, concurrency=concurrency)
    )
    worker = subprocess.Popen(  # noqa: ASYNC220  (a benchmark's setup, not a request path)
        [sys.executable, "-m", "arq", "arq_bench_worker.WorkerSettings"],
        cwd=tmp, env={**os.environ, "PYTHONPATH": str(tmp)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pool = await create_pool(RedisSettings.from_dsn(redis), default_queue_name=queue)
    try:
        warm = [await pool.enqueue_job("noop", i) for i in range(concurrency)]
        for job in warm:
            assert job is not None
            await job.result(timeout=60)
        started = time.perf_counter()
        jobs = await asyncio.gather(*(pool.enqueue_job("noop", i) for i in range(runs)))
        latencies = []
        for job in jobs:
            assert job is not None
            await job.result(timeout=120, poll_delay=0.01)
        elapsed = time.perf_counter() - started
        done = []
        for i in range(30):  # one at a time, like papayya's latency phase
            sent = time.perf_counter()
            job = await pool.enqueue_job("noop", i)
            assert job is not None
            await job.result(timeout=30, poll_delay=0.002)
            done.append(time.perf_counter() - sent)
            info = await job.result_info()
            assert info is not None
            latencies.append((info.start_time - info.enqueue_time).total_seconds())
    finally:
        await pool.aclose()
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    return {"throughput": runs / elapsed, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "failed": 0,
            "done_p50": percentile(done, 50), "done_p99": percentile(done, 99)}  # fmt: skip


async def bench_recovery(http: Any, pool: Any, p: Papayya) -> float:
    """Seconds from a worker's SIGKILL to the run's next attempt starting elsewhere."""
    agent = p.tmp / "sleeper_agent.py"
    agent.write_text(SLEEPER_AGENT)
    await call(http, p, "POST", "/v1/agents", {"name": "s", "slug": "sleeper", "config": {}})
    await call(http, p, "POST", "/v1/agents/sleeper/deployments", {"entrypoint": str(agent)})
    run_id = (await call(http, p, "POST", "/v1/agents/sleeper/runs", {}))["id"]
    while (await statuses(pool, [run_id])).get(run_id) != "running":
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    victim = next(w for w in p.workers if w.poll() is None)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = time.perf_counter()
    p.start_worker()
    while True:
        attempt = await pool.fetchval(
            "SELECT (summary->>'attempt')::int FROM stream_summaries WHERE stream_id = $1"
            " AND summary->>'status' = 'running'",
            "run-" + run_id,
        )
        if attempt == 2:
            return time.perf_counter() - killed
        await asyncio.sleep(0.05)


async def main() -> None:
    import aiohttp
    import asyncpg

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    base = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    redis = os.environ.get("PAPAYYA_BENCH_REDIS_URL", DEFAULT_REDIS)
    name = f"papayya_bench_e2e_{uuid.uuid4().hex[:8]}"
    await admin(base, f"CREATE DATABASE {name}")
    dsn = with_database(base, name)
    tmp = Path(tempfile.mkdtemp(prefix="papayya-e2e-"))
    os.chmod(tmp, 0o755)  # a root worker's agents run as another uid and read their module here
    p = Papayya(dsn, redis, tmp, args.concurrency)
    try:
        progress("arq baseline")
        arq = await bench_arq(redis, tmp, args.runs, args.concurrency)
        p.start_server()
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, p)
            p.start_worker()
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
            try:
                progress(f"papayya: {args.runs} no-op runs")
                ours = await bench_papayya(http, pool, p, args.runs)
                progress("recovery after a worker kill")
                recovery = await bench_recovery(http, pool, p)
            finally:
                await pool.close()
    finally:
        p.stop()
        await admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    ratio = ours["throughput"] / arq["throughput"]
    load = os.getloadavg()[0]
    print(
        f"\n## Cloud execution end to end ({platform.node()}, {os.cpu_count()} cores, "
        f"load {load:.1f}; {args.runs} no-op runs, worker concurrency {args.concurrency})\n"
    )
    print("| measurement | papayya (process runtime) | arq | target |")
    print("|---|---|---|---|")
    verdict = "met" if ratio >= 0.5 else "MISSED"
    print(
        f"| throughput, runs/s ({args.runs} at once) | {ours['throughput']:.1f} | "
        f"{arq['throughput']:.1f} | >= 0.5x arq: ratio {ratio:.2f}, {verdict} |"
    )
    for q in ("p50", "p99"):
        print(
            f"| one run at a time: trigger → first step (arq: enqueue → start), {q} | "
            f"{ours[q] * 1e3:.1f} ms | {arq[q] * 1e3:.1f} ms | |"
        )
    for q in ("p50", "p99"):
        print(
            f"| one run at a time: trigger → completed seen by the client, {q} | "
            f"{ours['done_' + q] * 1e3:.1f} ms | {arq['done_' + q] * 1e3:.1f} ms | |"
        )
    print(
        f"| CPU per run in the batch: papayya processes / Postgres / Redis | "
        f"{ours['cpu_papayya']:.1f} / {ours['cpu_postgres']:.1f} / {ours['cpu_redis']:.1f} ms"
        f" | | |"
    )
    print(f"| failed runs | {int(ours['failed'])} | 0 | 0 |")
    limit = LEASE_SECONDS + 5
    print(
        f"| recovery after a worker SIGKILL (lease {LEASE_SECONDS:.0f} s) | {recovery:.1f} s "
        f"| n/a | <= {limit:.0f} s: {'met' if recovery <= limit else 'MISSED'} |"
    )


if __name__ == "__main__":
    asyncio.run(main())
