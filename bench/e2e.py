"""End-to-end benchmark of cloud execution: no-op agent runs from API trigger to `completed`
with the process runtime, beside two baselines measured in the same run: the same no-op job
through `arq` (a plain Redis job queue with no durability) on the same Redis, and a one-step
workflow through DBOS's durable Postgres queue on the same Postgres; and recovery after a
worker kill.

Run from the repo root: ``.venv/bin/python bench/e2e.py [--runs N] [--concurrency C]``. It
creates a throw-away database on ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local server),
uses the Redis at ``PAPAYYA_BENCH_REDIS_URL`` (default 127.0.0.1:6379) under queue names of
its own, starts ``papayya server --concurrency 0`` (API, dispatcher, sweeper, projectors)
and ``papayya worker`` as processes, and prints a Markdown table. Not a test.

Papayya's runs are event-sourced: every transition (queued, started, the step, completed) is
an appended event, and each run gets an OS process of its own (forked from the deployment's
warm fork server). Targets (issue 15): >= 2x DBOS's throughput and >= 0.25x arq's;
trigger -> first step p50 <= 15 ms; about 8 ms of CPU per run in all (Papayya's processes and
its Postgres backends, which the table gives by process kind); recovery after a worker kill
<= lease expiry + 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
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
# Without --socket: the worker finds the API's socket in the data directory they share.
WORKER_CHOICE = "what the worker found (the API's socket in the shared data directory)"
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

    def __init__(
        self, dsn: str, redis: str, tmp: Path, concurrency: int, socket: bool = False
    ) -> None:
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
        if socket:  # the worker hands its agents the API's own socket: no relay in between
            self.env["PAPAYYA_RUNTIME_SOCKET"] = str(tmp / "data" / "papayya.sock")
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


BENCH_APP = "papayya-e2e-bench"  # the benchmark's own Postgres sessions, left out of the CPU


def _cpu(proc: Any) -> float:
    """CPU seconds of one process (all its threads)."""
    t = proc.cpu_times()
    return float(t.user + t.system)


async def backend_pids(pool: Any) -> list[int]:
    """The Postgres backends serving the database under test, but for the benchmark's own."""
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name <> $1",
        BENCH_APP,
    )
    return [int(r["pid"]) for r in rows]


def cpu_seconds(server: int, workers: list[int], postgres: list[int]) -> dict[str, float]:
    """CPU time used so far, by process kind: the API server (API, dispatcher, sweeper,
    projectors), the workers, their fork servers, the agent processes (forked by the fork
    servers and reaped by them), the Postgres backends of this database, Redis. ``<kind>_sys``
    is the part spent in the kernel."""
    import psutil

    kinds = ("api", "worker", "forkserver", "agents")
    found = dict.fromkeys((*kinds, *(k + "_sys" for k in kinds), "redis"), 0.0)

    def add(kind: str, user: float, system: float) -> None:
        found[kind] += user + system
        found[kind + "_sys"] += system

    with contextlib.suppress(psutil.Error):
        t = psutil.Process(server).cpu_times()
        add("api", t.user, t.system)
    for pid in workers:
        with contextlib.suppress(psutil.Error):
            worker = psutil.Process(pid)
            t = worker.cpu_times()
            add("worker", t.user, t.system)
            for child in worker.children():
                with contextlib.suppress(psutil.Error):
                    t = child.cpu_times()
                    if "papayya.runtime.forkserver" not in " ".join(child.cmdline()):
                        add("worker", t.user, t.system)
                        continue
                    add("forkserver", t.user, t.system)
                    add("agents", t.children_user, t.children_system)
                    for agent in child.children():  # still running: not yet reaped
                        with contextlib.suppress(psutil.Error):
                            a = agent.cpu_times()
                            add("agents", a.user, a.system)
    for pid in postgres:
        with contextlib.suppress(psutil.Error):
            found[f"pg{pid}"] = _cpu(psutil.Process(pid))
    for proc in psutil.process_iter(["name"]):
        if "redis-server" in (proc.info["name"] or ""):
            with contextlib.suppress(psutil.Error):
                found["redis"] += _cpu(proc)
    return found


def cpu_delta(before: dict[str, float], after: dict[str, float], runs: int) -> dict[str, float]:
    """Milliseconds of CPU per run, by kind. A Postgres backend counts from its start if it
    connected during the batch; one that disconnected during it is lost (the pools keep
    theirs open, so few do)."""
    out = {k: (after[k] - before[k]) / runs * 1e3 for k in after if not k.startswith("pg")}
    backends = [after[k] - before.get(k, 0.0) for k in after if k.startswith("pg")]
    out["postgres"] = sum(backends) / runs * 1e3
    return out


def postgres_all() -> dict[int, float]:
    """CPU seconds of each Postgres process on the machine (other databases' included)."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["name"]):
        if (proc.info["name"] or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                found[proc.pid] = _cpu(proc)
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
    assert p.server is not None
    workers = [w.pid for w in p.workers]
    cpu_before = cpu_seconds(p.server.pid, workers, await backend_pids(pool))
    pg_before = postgres_all()
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
    cpu_after = cpu_seconds(p.server.pid, workers, await backend_pids(pool))
    cpu = cpu_delta(cpu_before, cpu_after, runs)
    pg_after = postgres_all()  # those that exited during the batch are left out
    cpu["postgres_all"] = sum(v - pg_before.get(k, 0.0) for k, v in pg_after.items()) / runs * 1e3
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

    store = await PostgresEventStore.connect(
        p.env["PAPAYYA_DATABASE_URL"], min_size=1, max_size=2, notify=False
    )
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
            **{f"cpu_{k}": v for k, v in cpu.items()}}  # fmt: skip


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


DBOS_MARK = "E2E-BENCH-DBOS "


def dbos_backends(dsn: str) -> dict[int, float]:
    """CPU seconds of each Postgres backend on DBOS's database, but for this query's own."""
    import psutil
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    found = {}
    for (pid,) in pids:
        with contextlib.suppress(psutil.Error):
            found[int(pid)] = _cpu(psutil.Process(pid))
    return found


def dbos_child(dsn: str, runs: int, concurrency: int) -> None:
    """DBOS's durable queue, as the issue states it: ``register_queue`` after ``launch``, a
    warm-up, ``runs`` one-step workflows enqueued at once and timed until every result is in,
    then 30 alone for enqueue → step start. Prints one JSON line of figures."""
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "papayya-e2e-bench", "system_database_url": dsn,
                 "log_level": "WARNING"})  # fmt: skip

    @DBOS.step()
    def noop(value: int) -> float:
        return time.time()

    @DBOS.workflow()
    def one_step(value: int) -> float:
        return noop(value)

    DBOS.launch()
    try:
        queue = DBOS.register_queue(
            "bench", worker_concurrency=concurrency, polling_interval_sec=0.01
        )
        for handle in [queue.enqueue(one_step, i) for i in range(concurrency)]:
            handle.get_result()
        before = dbos_backends(dsn)
        cpu = time.process_time()
        started = time.perf_counter()
        handles = [queue.enqueue(one_step, i) for i in range(runs)]
        for handle in handles:
            handle.get_result()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        after = dbos_backends(dsn)
        postgres = sum(v - before.get(k, 0.0) for k, v in after.items())
        first_step, done = [], []
        for i in range(30):
            sent, clock = time.time(), time.perf_counter()
            stepped = queue.enqueue(one_step, i).get_result()
            done.append(time.perf_counter() - clock)
            first_step.append(stepped - sent)
    finally:
        DBOS.destroy()
    print(DBOS_MARK + json.dumps({"throughput": runs / elapsed, "cpu_dbos": cpu / runs * 1e3,
                                  "cpu_postgres": postgres / runs * 1e3,
                                  "first_step": first_step, "done": done}), flush=True)  # fmt: skip


async def bench_dbos(base: str, runs: int, concurrency: int) -> dict[str, float]:
    """DBOS in a child process of its own (its threads never share ours), on a system
    database of its own on the same server."""
    name = f"papayya_bench_e2e_dbos_{uuid.uuid4().hex[:8]}"
    dsn = with_database(base, name)  # DBOS creates it
    command = [sys.executable, str(ROOT / "bench" / "e2e.py"), "--dbos-child", dsn,
               "--runs", str(runs), "--concurrency", str(concurrency)]  # fmt: skip
    child = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await child.communicate()
    finally:
        await admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    for line in out.decode().splitlines():
        if line.startswith(DBOS_MARK):
            found = json.loads(line[len(DBOS_MARK) :])
            return {**found, "p50": percentile(found["first_step"], 50),
                    "p99": percentile(found["first_step"], 99),
                    "done_p50": percentile(found["done"], 50),
                    "done_p99": percentile(found["done"], 99)}  # fmt: skip
    raise RuntimeError("DBOS failed: " + " | ".join(err.decode().strip().splitlines()[-3:]))


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-recovery", action="store_true", help="skip the worker-kill part")
    parser.add_argument("--no-baselines", action="store_true", help="papayya alone (profiling)")
    parser.add_argument(
        "--socket", action="store_true",
        help="give the worker the API's Unix socket (PAPAYYA_RUNTIME_SOCKET) explicitly; by "
        "default it finds it in the data directory it shares with the server (before, its "
        "agents reached the API through its relay)",
    )  # fmt: skip
    parser.add_argument("--dbos-child", metavar="DSN", help=argparse.SUPPRESS)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    import aiohttp
    import asyncpg

    base = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    redis = os.environ.get("PAPAYYA_BENCH_REDIS_URL", DEFAULT_REDIS)
    name = f"papayya_bench_e2e_{uuid.uuid4().hex[:8]}"
    await admin(base, f"CREATE DATABASE {name}")
    dsn = with_database(base, name)
    tmp = Path(tempfile.mkdtemp(prefix="papayya-e2e-"))
    os.chmod(tmp, 0o755)  # a root worker's agents run as another uid and read their module here
    p = Papayya(dsn, redis, tmp, args.concurrency, args.socket)
    load_start = os.getloadavg()
    arq = dbos = None
    recovery = float("nan")
    try:
        if not args.no_baselines:
            progress("arq baseline")
            arq = await bench_arq(redis, tmp, args.runs, args.concurrency)
            progress("DBOS baseline")
            dbos = await bench_dbos(base, args.runs, args.concurrency)
        p.start_server()
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, p)
            p.start_worker()
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=4, server_settings={"application_name": BENCH_APP}
            )
            try:
                progress(f"papayya: {args.runs} no-op runs")
                ours = await bench_papayya(http, pool, p, args.runs)
                if not args.no_recovery:
                    progress("recovery after a worker kill")
                    recovery = await bench_recovery(http, pool, p)
            finally:
                await pool.close()
    finally:
        p.stop()
        await admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    shutil.rmtree(tmp, ignore_errors=True)  # kept, with the processes' logs, if it failed
    print_table(args, ours, arq, dbos, recovery, load_start)


def print_table(
    args: argparse.Namespace,
    ours: dict[str, float],
    arq: dict[str, float] | None,
    dbos: dict[str, float] | None,
    recovery: float,
    load_start: tuple[float, float, float],
) -> None:
    load = os.getloadavg()
    print(
        f"\n## Cloud execution end to end ({platform.node()}, {os.cpu_count()} cores, "
        f"load average {load_start[0]:.2f} at start, {load[0]:.2f} / {load[1]:.2f} / "
        f"{load[2]:.2f} at end; {args.runs} no-op runs triggered at once, worker concurrency "
        f"{args.concurrency}; agents reach the API through "
        f"{'its Unix socket' if args.socket else WORKER_CHOICE})\n"
    )
    print("| measurement | papayya (process runtime) | DBOS queue | arq | target |")
    print("|---|---|---|---|---|")

    def cell(found: dict[str, float] | None, key: str, scale: float = 1.0, fmt: str = ".1f") -> str:
        return "n/a" if found is None or key not in found else f"{found[key] * scale:{fmt}}"

    target = []
    if dbos is not None:
        x = ours["throughput"] / dbos["throughput"]
        target.append(f"≥ 2× DBOS: {x:.2f}× {'met' if x >= 2 else 'MISSED'}")
    if arq is not None:
        x = ours["throughput"] / arq["throughput"]
        target.append(f"≥ 0.25× arq: {x:.2f}× {'met' if x >= 0.25 else 'MISSED'}")
    print(
        f"| throughput, runs/s ({args.runs} at once) | **{ours['throughput']:.1f}** | "
        f"{cell(dbos, 'throughput')} | {cell(arq, 'throughput')} | {'; '.join(target)} |"
    )
    for q in ("p50", "p99"):
        goal = "≤ 15 ms: " + ("met" if ours[q] <= 0.015 else "MISSED") if q == "p50" else ""
        print(
            f"| one run at a time: trigger → first step (DBOS: enqueue → step; arq: enqueue → "
            f"start), {q} ms | {ours[q] * 1e3:.1f} | {cell(dbos, q, 1e3)} | {cell(arq, q, 1e3)}"
            f" | {goal} |"
        )
    for q in ("p50", "p99"):
        print(
            f"| one run at a time: trigger → completed seen by the client, {q} ms | "
            f"{ours['done_' + q] * 1e3:.1f} | {cell(dbos, 'done_' + q, 1e3)} | "
            f"{cell(arq, 'done_' + q, 1e3)} | |"
        )
    kinds = (("api", "API server (API, dispatcher, sweeper, projectors)"), ("worker", "worker"),
             ("forkserver", "fork server"), ("agents", "agent processes"))  # fmt: skip
    for key, label in kinds:
        print(
            f"| CPU per run in the batch, {label}, ms (of which kernel) | "
            f"{ours['cpu_' + key]:.2f} ({ours['cpu_' + key + '_sys']:.2f}) | | | |"
        )
    ours_total = sum(ours["cpu_" + k] for k, _ in kinds)
    print(
        f"| CPU per run, all Papayya processes, ms | **{ours_total:.2f}** | "
        f"{cell(dbos, 'cpu_dbos', fmt='.2f')} (its process) | | |"
    )
    print(
        f"| CPU per run, Postgres backends of the benchmark's database, ms | "
        f"**{ours['cpu_postgres']:.2f}** | {cell(dbos, 'cpu_postgres', fmt='.2f')} | | |"
    )
    total = ours_total + ours["cpu_postgres"]
    dbos_total = "n/a" if dbos is None else f"{dbos['cpu_dbos'] + dbos['cpu_postgres']:.2f}"
    print(
        f"| CPU per run, Papayya + its Postgres backends, ms | **{total:.2f}** | {dbos_total} "
        f"| | ≈ 8 ms: {'met' if total <= 8 else 'MISSED'} |"
    )
    print(
        f"| (reference) CPU per run, every Postgres process on the machine / Redis, ms | "
        f"{ours['cpu_postgres_all']:.2f} / {ours['cpu_redis']:.2f} | | | |"
    )
    print(f"| failed runs | {int(ours['failed'])} | 0 | 0 | 0 |")
    if not math.isnan(recovery):
        limit = LEASE_SECONDS + 5
        print(
            f"| recovery after a worker SIGKILL (lease {LEASE_SECONDS:.0f} s) | {recovery:.1f} s "
            f"| | | ≤ {limit:.0f} s: {'met' if recovery <= limit else 'MISSED'} |"
        )


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.dbos_child:
        dbos_child(arguments.dbos_child, arguments.runs, arguments.concurrency)
    else:
        asyncio.run(main(arguments))
