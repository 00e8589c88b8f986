"""LLM gateway benchmark: what metering adds to a model call, and how many calls it carries.

Run from the repo root: ``.venv/bin/python bench/gateway.py [--quick]``. It creates a throw-away
database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local one), migrates it,
starts the fake provider (zero latency) and the Papayya app in this process on free loopback
ports, measures, drops the database and prints Markdown tables. Not a test: ``make test`` never
runs it, and its numbers depend on the machine (it prints the machine info alongside them).

Every gateway call here is a live, budgeted call (the runs have a large ``budget_micro_usd``),
so each one reserves, forwards, records and settles. Request bodies differ from call to call
(as an agent's growing history does), so payload dedup never saves a write.

Measurements (each repeated, medians reported)
1. non-streaming chat completion, sequential: direct to the fake vs through the gateway,
   interleaved call by call; p50/p99 of each and the added latency. Once with a plain aiohttp
   client, once with the official ``openai.AsyncOpenAI`` client;
2. streaming: time to the first body byte (and to the end of the stream), direct vs gateway;
3. throughput at concurrency 16 and 32 for a fixed window: direct, gateway with one run per
   worker, gateway with every worker on one run (a run's appends serialise on its stream);
4. where one call's time goes: each awaited store/upstream operation of the gateway timed,
   raw Postgres round trip and commit costs, a cProfile of sequential gateway calls;
5. run length: the same call on a fresh run and on a run that already has thousands of steps;
6. what-if: the gateway with single round trips removed by monkeypatching *in this process*
   (nothing in the package changes), to give the proposed optimisations numbers.

Client, gateway and fake share one event loop (and the machine's cores with Postgres), so
the throughput figures are for the whole loop; the CPU columns show where the cores went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import itertools
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

import papayya.domain.fold as fold_module  # noqa: E402
import papayya.metering.meter as meter_module  # noqa: E402
import papayya.metering.runcache as runcache_module  # noqa: E402
import papayya.runs as runs_module  # noqa: E402
from eventstore import payloads  # noqa: E402
from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import SERVER_SETTINGS  # noqa: E402
from eventstore.postgres import Q as STORE_Q  # noqa: E402
from fakellm import FakeConfig  # noqa: E402
from fakellm.testing import FakeServer, running_fake  # noqa: E402
from papayya import runtokens  # noqa: E402
from papayya.config import Config  # noqa: E402
from papayya.domain import events as ev  # noqa: E402
from server.app import init_app  # noqa: E402
from web import keys  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL = "gpt-4o-mini"
BUDGET_MICRO_USD = 10**12  # a million dollars: every call reserves and settles, none refused
PROVIDER_KEY = "sk-bench-provider-key"
# About 600 bytes of system prompt: a small but not empty request.
SYSTEM_PROMPT = "You are a careful assistant. Answer briefly and cite your sources. " * 9
TARGETS = {"added_p50": 2.0, "added_p99": 5.0, "added_ttft": 2.0, "calls_per_s": 1000.0}


@dataclass(frozen=True)
class Settings:
    reps: int
    latency_calls: int
    openai_calls: int
    warmup: int
    seconds: float
    concurrencies: tuple[int, ...]
    profile_calls: int
    long_steps: int
    long_calls: int
    whatif_reps: int
    whatif_calls: int
    whatif_seconds: float


FULL = Settings(
    reps=3, latency_calls=500, openai_calls=300, warmup=50, seconds=10.0, concurrencies=(16, 32),
    profile_calls=300, long_steps=5000, long_calls=200, whatif_reps=3, whatif_calls=300,
    whatif_seconds=5.0,
)  # fmt: skip
QUICK = Settings(
    reps=1, latency_calls=150, openai_calls=60, warmup=20, seconds=3.0, concurrencies=(16, 32),
    profile_calls=100, long_steps=1500, long_calls=60, whatif_reps=1, whatif_calls=100,
    whatif_seconds=2.0,
)  # fmt: skip


class BenchError(Exception):
    pass


# -- numbers --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (seconds in, milliseconds out)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index] * 1000


def med(values: list[float]) -> float:
    return statistics.median(values)


def ms(value: float) -> str:
    return f"{value:.2f}"


def verdict(value: float, limit: float, higher_is_better: bool = False) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    return "met" if ok else "**missed**"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- machine --------------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "papayya", "eventstore",
             "web", "sql"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        return head + (" (uncommitted changes in papayya/eventstore/web/sql)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


async def pg_round_trips(dsn: str, n: int) -> dict[str, float]:
    """p50 of a bare round trip and of single-row autocommit INSERTs with and without the
    commit's WAL flush, on a connection of our own."""
    conn = await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)
    insert = "INSERT INTO bench_commit VALUES (1)"
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (x bigint)")
        out: dict[str, float] = {}
        for label, sql, sync in (
            ("SELECT 1", "SELECT 1", "on"),
            ("INSERT + commit (synchronous_commit=on)", insert, "on"),
            ("INSERT + commit (synchronous_commit=off)", insert, "off"),
        ):  # fmt: skip
            await conn.execute(f"SET synchronous_commit = {sync}")
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await conn.execute(sql)
                times.append(time.perf_counter() - t0)
            out[label] = pct(times, 0.5)
        await conn.execute("DROP TABLE bench_commit")
        return out
    finally:
        await conn.close()


async def machine_rows(dsn: str) -> list[list[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        pg = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method",
                         "shared_buffers", "max_connections")
        }  # fmt: skip
    finally:
        await conn.close()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ["nproc", str(cpus)],
        ["CPU", cpu_model()],
        ["memory", f"{memory_gib():.1f} GiB"],
        ["OS", f"{platform.system()} {platform.release()} {platform.machine()}"],
        ["load average at start", load],
        ["Python", f"{platform.python_version()} (asyncio default loop)"],
        ["aiohttp / asyncpg / openai",
         f"{aiohttp.__version__} / {asyncpg.__version__} / {version_of('openai')}"],
        ["Postgres", pg.pop("server_version")],
        ["Postgres settings", ", ".join(f"{k}={v}" for k, v in pg.items())],
        ["code", git_state()],
    ]  # fmt: skip


class CpuSampler:
    """CPU used between two samples: this process, our database's backends, the machine."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.tick = os.sysconf("SC_CLK_TCK")

    async def sample(self) -> tuple[float, float, dict[int, float], tuple[float, float]]:
        pids = [r[0] for r in await self.pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )]  # fmt: skip
        return self._read_proc(pids)

    def _read_proc(self, pids: list[int]) -> tuple[float, float, dict[int, float], Any]:
        # /proc reads never block on a disk.
        backends = {}
        for pid in pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                backends[pid] = (int(fields[11]) + int(fields[12])) / self.tick
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
        busy = sum(cpu) - cpu[3] - cpu[4]  # minus idle and iowait
        return time.perf_counter(), time.process_time(), backends, (busy, sum(cpu))

    @staticmethod
    def usage(start: Any, end: Any) -> dict[str, float]:
        wall = end[0] - start[0]
        backends = sum(v - start[2].get(pid, 0.0) for pid, v in end[2].items())
        busy = end[3][0] - start[3][0]
        total = end[3][1] - start[3][1]
        return {
            "proc_cores": (end[1] - start[1]) / wall,
            "pg_cores": backends / wall,
            "machine_busy": busy / total if total else float("nan"),
        }


# -- the system under test ------------------------------------------------------------------


class Target:
    """Where calls go: the fake directly, or the gateway with a run token."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def call(self, body: bytes) -> None:
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            content = await resp.read()
            if resp.status != 200:
                raise BenchError(f"HTTP {resp.status} from {self.url}: {content[:300]!r}")

    async def stream(self, body: bytes) -> tuple[float, float]:
        """Seconds to the first body byte and to the end of the stream."""
        t0 = time.perf_counter()
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            if resp.status != 200:
                raise BenchError(f"HTTP {resp.status} from {self.url}: {await resp.read()!r}")
            first = await resp.content.readany()
            t1 = time.perf_counter()
            if not first:
                raise BenchError("empty stream")
            while await resp.content.readany():
                pass
            return t1 - t0, time.perf_counter() - t0


_seq = itertools.count()


def chat_body(stream: bool = False) -> bytes:
    """A chat request whose content differs from every other one."""
    n = next(_seq)
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Question {n}: what is {n} squared?"},
        ],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


@dataclass
class System:
    app: web.Application
    fake: FakeServer
    url: str
    dsn: str
    session: aiohttp.ClientSession
    project_id: str = ""
    direct: Target = field(init=False)

    def __post_init__(self) -> None:
        self.direct = Target(self.session, self.fake.openai_base_url, PROVIDER_KEY)

    @property
    def gateway_url(self) -> str:
        return f"{self.url}/v1/llm/openai"

    async def new_run(self) -> tuple[str, str]:
        """A running, budgeted run and its token, as a worker would make them."""
        runs = self.app[keys.RUNS]
        run_id = f"run_bench_{uuid.uuid4().hex[:12]}"
        queued = ev.RunQueued(
            run_id=run_id, project_id=self.project_id, agent_id="bench-gateway",
            budget_micro_usd=BUDGET_MICRO_USD,
        )  # fmt: skip
        state = await runs.queue(queued)
        await runs.append(state, [ev.RunStarted(attempt=1)])
        return run_id, runtokens.mint(self.app[keys.RUN_TOKEN_SECRET], run_id, 1)

    async def gateway(self) -> Target:
        _, token = await self.new_run()
        return Target(self.session, self.gateway_url, token)


@contextlib.asynccontextmanager
async def running_system(dsn: str, projectors: bool) -> AsyncIterator[System]:
    async with running_fake(FakeConfig()) as fake:
        # What gateway_support does with monkeypatch: upstreams are read from the environment
        # when the app starts.
        os.environ["PAPAYYA_OPENAI_BASE_URL"] = fake.openai_base_url
        os.environ["PAPAYYA_OPENAI_API_KEY"] = PROVIDER_KEY
        os.environ["PAPAYYA_ANTHROPIC_BASE_URL"] = fake.anthropic_base_url
        os.environ["PAPAYYA_ANTHROPIC_API_KEY"] = PROVIDER_KEY
        os.environ["PAPAYYA_BOOTSTRAP_API_KEY"] = "cpk_bench_" + uuid.uuid4().hex
        options: dict[str, Any] = {}
        if "run_projectors" in {f.name for f in dataclasses.fields(Config)}:
            options["run_projectors"] = projectors
        app = init_app(Config(database_url=dsn, **options), dsn)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            connector = aiohttp.TCPConnector(limit=200)
            async with aiohttp.ClientSession(connector=connector) as session:
                system = System(app, fake, f"http://127.0.0.1:{port}", dsn, session)
                pool = app[keys.STORE].pool
                system.project_id = str(
                    await pool.fetchval("SELECT project_id FROM projects WHERE name='default'")
                )
                yield system
        finally:
            await runner.cleanup()


# -- 1. sequential latency ------------------------------------------------------------------


@dataclass
class Timed:
    """Wall seconds and this process's CPU seconds of each call."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


async def interleaved(
    calls: list[Callable[[], Awaitable[Any]]], n: int, warmup: int
) -> list[Timed]:
    """Each callable's calls, taking turns so that noise hits all alike."""
    for _ in range(warmup):
        for call in calls:
            await call()
    times = [Timed() for _ in calls]
    for _ in range(n):
        for i, call in enumerate(calls):
            c0, t0 = time.process_time(), time.perf_counter()
            await call()
            times[i].wall.append(time.perf_counter() - t0)
            times[i].cpu.append(time.process_time() - c0)
    return times


async def latency_aiohttp(system: System, s: Settings) -> dict[str, float]:
    gateway = await system.gateway()  # a fresh run each time: its length stays ~N steps
    sampler = CpuSampler(system.app[keys.STORE].pool)
    before = await sampler.sample()
    direct, through = await interleaved(
        [lambda: system.direct.call(chat_body()), lambda: gateway.call(chat_body())],
        s.latency_calls, s.warmup,
    )  # fmt: skip
    after = await sampler.sample()
    out = summarize(direct, through)
    wall = after[0] - before[0]
    # Our database's backends only serve the gateway calls (and their background work).
    out["pg_cpu_per_gw_call"] = (
        CpuSampler.usage(before, after)["pg_cores"] * wall / (s.latency_calls + s.warmup) * 1000
    )
    return out


def summarize(direct: Timed, through: Timed) -> dict[str, float]:
    out = {
        "direct_p50": pct(direct.wall, 0.5), "direct_p99": pct(direct.wall, 0.99),
        "gw_p50": pct(through.wall, 0.5), "gw_p99": pct(through.wall, 0.99),
        "direct_cpu": statistics.fmean(direct.cpu) * 1000,
        "gw_cpu": statistics.fmean(through.cpu) * 1000,
    }  # fmt: skip
    out["added_p50"] = out["gw_p50"] - out["direct_p50"]
    out["added_p99"] = out["gw_p99"] - out["direct_p99"]
    out["added_cpu"] = out["gw_cpu"] - out["direct_cpu"]
    return out


async def latency_openai(system: System, s: Settings) -> dict[str, float]:
    import openai

    _, token = await system.new_run()
    direct = openai.AsyncOpenAI(
        base_url=system.fake.openai_base_url, api_key=PROVIDER_KEY, max_retries=0
    )
    through = openai.AsyncOpenAI(base_url=system.gateway_url, api_key=token, max_retries=0)

    def call(client: Any) -> Callable[[], Awaitable[Any]]:
        async def one() -> None:
            n = next(_seq)
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"Question {n}: what is {n} squared?"},
            ]
            await client.chat.completions.create(model=MODEL, messages=messages)

        return one

    try:
        d, g = await interleaved([call(direct), call(through)], s.openai_calls, s.warmup)
    finally:
        await direct.close()
        await through.close()
    return summarize(d, g)


# -- 2. streaming ---------------------------------------------------------------------------


async def streaming(system: System, s: Settings) -> dict[str, float]:
    gateway = await system.gateway()
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "gw": []}

    async def one(name: str, target: Target) -> None:
        results[name].append(await target.stream(chat_body(stream=True)))

    for _ in range(s.warmup):
        await system.direct.stream(chat_body(stream=True))
        await gateway.stream(chat_body(stream=True))
    await interleaved(
        [lambda: one("direct", system.direct), lambda: one("gw", gateway)], s.latency_calls, 0
    )
    out: dict[str, float] = {}
    for name, pairs in results.items():
        first = [p[0] for p in pairs]
        total = [p[1] for p in pairs]
        out[f"{name}_ttft_p50"] = pct(first, 0.5)
        out[f"{name}_ttft_p99"] = pct(first, 0.99)
        out[f"{name}_total_p50"] = pct(total, 0.5)
        out[f"{name}_total_p99"] = pct(total, 0.99)
    for k in ("ttft_p50", "ttft_p99", "total_p50", "total_p99"):
        out[f"added_{k}"] = out[f"gw_{k}"] - out[f"direct_{k}"]
    return out


# -- 3. throughput --------------------------------------------------------------------------


async def throughput(
    system: System, targets: list[Target], concurrency: int, seconds: float, ramp: float = 1.0
) -> dict[str, float]:
    """Calls completed per second inside a window that starts after a ramp-up."""
    sampler = CpuSampler(system.app[keys.STORE].pool)
    latencies: list[float] = []
    errors: list[str] = []
    t_begin = time.perf_counter() + ramp
    t_end = t_begin + seconds
    samples: list[Any] = []

    async def worker(k: int) -> None:
        target = targets[k % len(targets)]
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            try:
                await target.call(chat_body())
            except (BenchError, aiohttp.ClientError) as exc:
                errors.append(str(exc))
                if len(errors) > 100:
                    raise
                continue
            t1 = time.perf_counter()
            if t_begin <= t1 < t_end:
                latencies.append(t1 - t0)

    async def sample_window() -> None:
        await asyncio.sleep(max(0.0, t_begin - time.perf_counter()))
        samples.append(await sampler.sample())
        await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
        samples.append(await sampler.sample())

    await asyncio.gather(sample_window(), *(worker(k) for k in range(concurrency)))
    out = {
        "calls_per_s": len(latencies) / seconds,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "errors": float(len(errors)),
    }
    out.update(CpuSampler.usage(samples[0], samples[1]))
    calls = max(len(latencies), 1)
    out["proc_ms_per_call"] = out["proc_cores"] * seconds / calls * 1000
    out["pg_ms_per_call"] = out["pg_cores"] * seconds / calls * 1000
    if errors:
        print(f"  ! {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    return out


async def throughput_suite(system: System, s: Settings) -> dict[tuple[int, str], dict[str, float]]:
    results: dict[tuple[int, str], list[dict[str, float]]] = defaultdict(list)
    for rep in range(s.reps):
        for c in s.concurrencies:
            many = [await system.gateway() for _ in range(c)]
            one = [await system.gateway()]
            for name, targets in (("direct", [system.direct]), ("many", many), ("one", one)):
                r = await throughput(system, targets, c, s.seconds)
                results[(c, name)].append(r)
                print(f"  rep {rep + 1} c={c} {name}: {r['calls_per_s']:.0f} calls/s", flush=True)
    return {k: median_dict(v) for k, v in results.items()}


def median_dict(values: list[dict[str, float]]) -> dict[str, float]:
    return {k: med([v[k] for v in values]) for k in values[0]}


# -- 4. where the time goes -----------------------------------------------------------------


class SessionProxy:
    """The gateway's client session with ``post`` timed (aiohttp frowns on setting attributes
    of a ClientSession itself)."""

    def __init__(self, session: aiohttp.ClientSession, timed: Callable[..., Any]) -> None:
        self._session = session
        self.post = timed("upstream POST (until response headers)", session.post)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class CountingPool:
    """The store's pool, counting the statements sent through it by name."""

    NAMES = {sql: name for name, sql in STORE_Q.items()}

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.counts: dict[str, int] = defaultdict(int)

    def _count(self, query: str) -> None:
        self.counts[self.NAMES.get(query, " ".join(query.split())[:40])] += 1

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._count(query)
        return await self._pool.execute(query, *args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._count(query)
        return await self._pool.fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._count(query)
        return await self._pool.fetchrow(query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._count(query)
        return await self._pool.fetchval(query, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


class Phases:
    """Times each awaited operation of a gateway call (calls must be sequential)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, float]] = []
        self.after_upstream = False
        self.pool: CountingPool | None = None

    def begin(self) -> None:
        self.calls.append(defaultdict(float))
        self.after_upstream = False

    def timed(self, label: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        phases = self

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = label(*args, **kwargs) if callable(label) else label
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                if phases.calls:
                    phases.calls[-1][name] += time.perf_counter() - t0
                if name.startswith("upstream"):
                    phases.after_upstream = True

        return wrapper

    @contextlib.contextmanager
    def installed(self, app: web.Application) -> Iterator[None]:
        store, meter = app[keys.STORE], app[keys.METER]
        saved = {"read_stream": store.read_stream, "append": store.append}
        session = meter.session
        call = meter.call

        async def begin_then_call(*args: Any, **kwargs: Any) -> Any:
            self.begin()  # one gateway call, from the meter's view
            return await call(*args, **kwargs)

        def append_label(stream_id: str, events: Any, *args: Any, **kwargs: Any) -> str:
            types = {e.type for e in events}
            if "BudgetReserved" in types:
                return "reserve: append BudgetReserved + commit"
            if "BudgetSettled" in types:
                return "settle: append step events, payloads, BudgetSettled + commit"
            return "other append"

        meter.call = begin_then_call
        read = "read_stream (a run not cached, or a refusal)"
        store.read_stream = self.timed(read, store.read_stream)
        store.append = self.timed(append_label, store.append)
        meter.session = SessionProxy(session, self.timed)
        pool = store._pool
        self.pool = CountingPool(pool)
        store._pool = self.pool
        try:
            yield
        finally:
            for name, fn in saved.items():
                setattr(store, name, fn)
            del meter.call
            meter.session = session
            store._pool = pool

    def rows(self) -> list[tuple[str, float, float]]:
        names = sorted({n for c in self.calls for n in c}, key=lambda n: -sum(
            c.get(n, 0.0) for c in self.calls
        ))  # fmt: skip
        out = []
        for name in names:
            values = [c.get(name, 0.0) for c in self.calls]
            out.append((name, statistics.fmean(values) * 1000, pct(values, 0.5)))
        return out


@dataclass
class PhaseReport:
    rows: list[tuple[str, float, float]]
    gateway_ms: float
    direct_ms: float
    references: dict[str, float]  # label -> p50 ms, measured in the same window
    statements: dict[str, float]  # pool statements per gateway call, background included


async def profile_phases(system: System, s: Settings) -> PhaseReport:
    gateway = await system.gateway()
    for _ in range(s.warmup):
        await gateway.call(chat_body())
        await system.direct.call(chat_body())
    phases = Phases()
    pool = system.app[keys.STORE].pool
    own = await asyncpg.connect(system.dsn, server_settings=SERVER_SETTINGS)
    refs: dict[str, list[float]] = defaultdict(list)
    wall: dict[str, list[float]] = defaultdict(list)

    async def timed(bucket: dict[str, list[float]], label: str, op: Awaitable[Any]) -> None:
        t0 = time.perf_counter()
        await op
        bucket[label].append(time.perf_counter() - t0)

    try:
        with phases.installed(system.app):
            for _ in range(s.profile_calls):
                await timed(wall, "direct", system.direct.call(chat_body()))
                await timed(wall, "gateway", gateway.call(chat_body()))
                # References under the same load as the calls around them.
                await timed(refs, "SELECT 1 on a connection of our own", own.fetchval("SELECT 1"))
                await timed(
                    refs, "SELECT 1 through the store's pool (acquire, query, release)",
                    pool.fetchval("SELECT 1"),
                )  # fmt: skip
            await asyncio.sleep(0.6)  # let the background work of the last call finish
    finally:
        await own.close()
    assert phases.pool is not None
    n = s.profile_calls
    return PhaseReport(
        rows=phases.rows(),
        gateway_ms=statistics.fmean(wall["gateway"]) * 1000,
        direct_ms=statistics.fmean(wall["direct"]) * 1000,
        references={k: pct(v, 0.5) for k, v in refs.items()},
        statements={k: v / n for k, v in phases.pool.counts.items()},
    )


async def cprofile(system: System, s: Settings) -> tuple[list[list[str]], list[list[str]]]:
    gateway = await system.gateway()
    for _ in range(s.warmup):
        await gateway.call(chat_body())
    # CPU time, not wall time: on a shared machine wall time mostly shows who else ran.
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(s.profile_calls):
        await gateway.call(chat_body())
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    n = s.profile_calls

    def where(key: tuple[str, int, str]) -> str:
        filename, line, func = key
        if filename == "~":
            return func.replace("<", "‹").replace(">", "›")
        path = filename
        for marker in ("site-packages/", str(ROOT) + "/"):
            if marker in path:
                path = path.split(marker, 1)[1]
        return f"{path}:{line} {func}".replace("<", "‹").replace(">", "›")

    own = sorted(entries.items(), key=lambda kv: -kv[1][2])[:15]
    own_rows = [
        [where(k), str(v[1] // n if v[1] >= n else f"{v[1] / n:.2f}"), f"{v[2] / n * 1e6:.0f}"]
        for k, v in own
    ]
    wanted = (
        ("web/gateway.py", "_serve"), ("papayya/metering/meter.py", "_checked"),
        ("papayya/metering/meter.py", "call"), ("papayya/metering/meter.py", "_live"),
        ("papayya/metering/meter.py", "_forward"), ("papayya/metering/meter.py", "_settle"),
        ("papayya/metering/meter.py", "_after_step"), ("papayya/metering/runcache.py", "slot"),
        ("papayya/metering/runcache.py", "append"), ("papayya/runs.py", "append"),
        ("papayya/runs.py", "run_summary"), ("papayya/domain/fold.py", "fold"),
        ("eventstore/postgres.py", "append"), ("papayya/runstates.py", "append_view"),
        ("papayya/domain/matcher.py", "llm_fingerprint"),
        ("fakellm/openai_chat.py", "chat_completions"),
    )  # fmt: skip
    cum_rows = []
    for path, func in wanted:
        for k, v in entries.items():
            if k[0].endswith(path) and k[2] == func:
                cum_rows.append([f"{path} {func}", f"{v[3] / n * 1e6:.0f}"])
    return own_rows, cum_rows


# -- 5. run length --------------------------------------------------------------------------


class CpuParts:
    """Time spent in the per-append pure work that grows with the run's length."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[label] += time.perf_counter() - t0

        return wrapper

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        patches = [
            (runs_module, "fold", "fold(new events, state) in Runs.append"),
            (runs_module, "run_summary", "run_summary(state) in Runs.append"),
            (fold_module, "fold", "fold(step events, state) in Meter._after_step"),
            (runcache_module, "fold", "fold in RunCache.refresh"),
            (meter_module, "repeated_tool_calls", "repeated_tool_calls(steps)"),
        ]
        saved = [(m, name, getattr(m, name)) for m, name, _ in patches]
        for m, name, label in patches:
            setattr(m, name, self.wrap(label, getattr(m, name)))
        try:
            yield
        finally:
            for m, name, fn in saved:
                setattr(m, name, fn)


async def long_run(system: System, s: Settings) -> dict[str, Any]:
    """The same call on a fresh run and on one with ``long_steps`` steps already."""
    runs = system.app[keys.RUNS]
    long_id, long_token = await system.new_run()
    long = Target(system.session, system.gateway_url, long_token)
    # Load the run's cache slot first, so that the steps written below (through the process's
    # run-state repository, which the slot reads) are a long-lived run's, not replayed from.
    await long.call(chat_body())
    state = await runs.load(long_id)
    ref = payloads.payload_ref(b"bench")
    for start in range(state.next_step, s.long_steps, 200):
        batch: list[ev.RunEvent] = []
        for n in range(start, min(start + 200, s.long_steps)):
            batch += [
                ev.StepStarted(step_number=n, step_type="response"),
                ev.LlmCallRecorded(
                    step_number=n, provider="openai", model=MODEL, fingerprint=f"{n:064x}",
                    input_tokens=160, output_tokens=6, cost_micro_usd=28, price_version="bench",
                    request_ref=ref, response_ref=ref, duration_ms=2.0, ttft_ms=2.0,
                ),
                ev.StepCompleted(step_number=n, duration_ms=2.0),
            ]  # fmt: skip
        state = await runs.append(state, batch)
    t0 = time.perf_counter()
    await long.call(chat_body())  # the first call on the long run
    catch_up = (time.perf_counter() - t0) * 1000
    fresh = await system.gateway()
    names = ("fresh", "long", "long_lean")
    parts = {name: CpuParts() for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(s.warmup):
        await fresh.call(chat_body())
        await long.call(chat_body())
    original = runs_module.run_summary
    for _ in range(s.long_calls):
        for name, target in (("fresh", fresh), ("long", long), ("long_lean", long)):
            if name == "long_lean":
                runs_module.run_summary = lean_summary
            try:
                with parts[name].installed():
                    t0 = time.perf_counter()
                    await target.call(chat_body())
                    times[name].append(time.perf_counter() - t0)
            finally:
                runs_module.run_summary = original
    fresh_state = await runs.load((await system.new_run())[0])
    long_state = await runs.load(long_id)
    assert lean_summary(long_state) == original(long_state), "lean summary differs"
    micro = {
        label: {
            "current": cpu_ms(lambda st=st: original(st)),
            "lean": cpu_ms(lambda st=st: lean_summary(st)),
        }
        for label, st in (("fresh", fresh_state), ("long", long_state))
    }
    return {
        "steps": long_state.next_step,
        "catch_up_ms": catch_up,
        "p50": {k: pct(v, 0.5) for k, v in times.items()},
        "p99": {k: pct(v, 0.99) for k, v in times.items()},
        "parts": {
            k: {label: t / s.long_calls * 1000 for label, t in p.total.items()}
            for k, p in parts.items()
        },
        "micro": micro,
    }


def lean_summary(state: Any) -> dict[str, Any]:
    """``run_summary`` without converting the fields it then throws away (the proposal)."""
    import msgspec

    lean = msgspec.structs.replace(state, steps=(), reservations=(), metadata={})
    data: dict[str, Any] = msgspec.to_builtins(lean)
    for key in runs_module._SUMMARY_SKIP:
        data.pop(key, None)
    data["current_step"] = state.next_step
    return data


def cpu_ms(fn: Callable[[], Any], repeat: int = 20) -> float:
    """Median CPU milliseconds of ``fn``."""
    times = []
    for _ in range(repeat):
        c0 = time.process_time()
        fn()
        times.append(time.process_time() - c0)
    return med(times) * 1000


# -- 6. what-if -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def variant(system: System, name: str) -> AsyncIterator[None]:
    """Patch this process's gateway to try an optimisation (the package stays unchanged)."""
    store, meter = system.app[keys.STORE], system.app[keys.METER]
    cache = meter.cache
    undo: list[Callable[[], Any]] = []
    parts = set(name.split("+")) if name != "baseline" else set()
    later: set[asyncio.Task[Any]] = set()

    if "refresh" in parts:  # as before: every call reads the run's stream before it reserves
        cache.cached = lambda run_id: None
        undo.append(lambda: delattr(cache, "cached"))
    if "nowake" in parts:  # own commits neither wake the hub (metrics) nor send a NOTIFY

        def committed(xid: int) -> None:
            store._last_local_xid = max(store._last_local_xid, xid)

        store._committed = committed
        undo.append(lambda: delattr(store, "_committed"))
    if "settlelater" in parts:  # the settlement's append after the answer, not before it
        settle = meter._settle

        async def settle_later(*args: Any, **kwargs: Any) -> None:
            task = asyncio.ensure_future(settle(*args, **kwargs))
            later.add(task)
            task.add_done_callback(later.discard)

        meter._settle = settle_later
        undo.append(lambda: delattr(meter, "_settle"))
    if "noloopcheck" in parts:  # no loop check (its fold of the step) in the settlement
        meter._after_step = lambda state, events: []
        undo.append(lambda: delattr(meter, "_after_step"))
    try:
        yield
    finally:
        if later:
            await asyncio.gather(*later)
        for fn in reversed(undo):
            fn()


VARIANTS = {
    "baseline": "as shipped",
    "refresh": "B undone: read the run's stream before reserving (the code before)",
    "nowake": "W: commits do not wake the hub or NOTIFY (bound for coalescing them)",
    "noloopcheck": "L: no loop check in the settlement (bound for an incremental one)",
    "settlelater": "S: settle after answering (bound; loses the step if the process dies)",
    "nowake+settlelater": "W+S",
}
# Variants take turns in slices this many call pairs long, so that the load of a shared
# machine, which swings over seconds, falls on all of them alike.
WHATIF_SLICE = 10


async def what_if(system: System, s: Settings) -> dict[str, dict[str, float]]:
    targets = {name: await system.gateway() for name in VARIANTS}
    timed: dict[str, list[Timed]] = {name: [Timed(), Timed()] for name in VARIANTS}
    for name, gateway in targets.items():  # warm each variant's run and its cache slot
        async with variant(system, name):
            for _ in range(s.warmup // 2):
                await gateway.call(chat_body())
    for _ in range(math.ceil(s.whatif_calls / WHATIF_SLICE)):
        for name, gateway in targets.items():
            async with variant(system, name):
                calls = [
                    lambda: system.direct.call(chat_body()),
                    lambda g=gateway: g.call(chat_body()),
                ]
                direct, through = await interleaved(calls, WHATIF_SLICE, 0)
            for mine, new in zip(timed[name], (direct, through), strict=True):
                mine.wall += new.wall
                mine.cpu += new.cpu
    rates: dict[str, list[float]] = defaultdict(list)
    for rep in range(s.whatif_reps):
        for name in VARIANTS:
            many = [await system.gateway() for _ in range(16)]
            async with variant(system, name):
                tp = await throughput(system, many, 16, s.whatif_seconds)
            rates[name].append(tp["calls_per_s"])
            print(f"  rep {rep + 1} {name}: {tp['calls_per_s']:.0f} calls/s", flush=True)
    out = {}
    for name in VARIANTS:
        lat = summarize(*timed[name])
        out[name] = {**lat, "calls_per_s": med(rates[name])}
        print(f"  {name}: +{lat['added_p50']:.2f} ms p50", flush=True)
    return out


# -- report ---------------------------------------------------------------------------------


@dataclass
class Results:
    machine: list[list[str]] = field(default_factory=list)
    raw: dict[str, float] = field(default_factory=dict)
    lat: list[dict[str, float]] = field(default_factory=list)
    oai: list[dict[str, float]] = field(default_factory=list)
    st: list[dict[str, float]] = field(default_factory=list)
    tp: dict[tuple[int, str], dict[str, float]] = field(default_factory=dict)
    phases: PhaseReport | None = None
    own_rows: list[list[str]] = field(default_factory=list)
    cum_rows: list[list[str]] = field(default_factory=list)
    long: dict[str, Any] = field(default_factory=dict)
    whatif: dict[str, dict[str, float]] = field(default_factory=dict)
    load: list[tuple[str, str]] = field(default_factory=list)

    def section(self, name: str) -> None:
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        self.load.append((name, load))
        print(f"{name} (load average {load})", flush=True)


async def run(s: Settings, admin_dsn: str, projectors: bool) -> None:
    name = f"papayya_bench_gw_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = with_database(admin_dsn, name)
    r = Results()
    try:
        await migrate(dsn)
        r.machine = await machine_rows(dsn)
        r.raw = await pg_round_trips(dsn, 300 if s.reps > 1 else 100)
        async with running_system(dsn, projectors) as system:
            r.section("1. sequential latency (aiohttp)")
            r.lat = [await latency_aiohttp(system, s) for _ in range(s.reps)]
            r.section("1b. sequential latency (openai SDK)")
            r.oai = [await latency_openai(system, s) for _ in range(s.reps)]
            r.section("2. streaming")
            r.st = [await streaming(system, s) for _ in range(s.reps)]
            r.section("3. throughput")
            r.tp = await throughput_suite(system, s)
            r.section("4. profile")
            r.phases = await profile_phases(system, s)
            r.own_rows, r.cum_rows = await cprofile(system, s)
            r.section("5. run length")
            r.long = await long_run(system, s)
            r.section("6. what-if")
            r.whatif = await what_if(system, s)
            r.section("done")
        r.machine.append(["load average at end", " ".join(f"{x:.2f}" for x in os.getloadavg())])
        r.machine.append(["read-model projectors in the app", "on" if projectors else "off"])
        text = report(s, r)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    print(text)


def report(s: Settings, r: Results) -> str:
    lat_m, oai_m, st_m = median_dict(r.lat), median_dict(r.oai), median_dict(r.st)
    parts: list[str] = ["", "# Gateway benchmark", ""]
    parts.append(
        f"Medians of {s.reps} repetition(s). Sequential: {s.latency_calls} interleaved call "
        f"pairs per repetition ({s.openai_calls} with the openai SDK) after {s.warmup} "
        f"warm-up pairs; throughput: {s.seconds:.0f} s windows after 1 s of ramp-up. Every "
        "gateway call is live and budgeted (reserve, forward, record, settle)."
    )
    machine = [*r.machine, ["load average per section", "; ".join(f"{n.split(' ')[0]} {v}"
                                                              for n, v in r.load)]]  # fmt: skip
    parts += ["", "## Machine", "", table(["", ""], machine), ""]
    parts += ["Raw Postgres costs before the run (own connection, p50 of serial statements):", ""]
    parts.append(table(["statement", "p50 ms"], [[k, ms(v)] for k, v in r.raw.items()]))

    parts += ["", "## 1. Non-streaming chat completion, sequential", ""]
    rows = []
    for client, d in (("aiohttp", lat_m), ("openai.AsyncOpenAI", oai_m)):
        rows += [
            [client, "direct to fake", ms(d["direct_p50"]), ms(d["direct_p99"]),
             ms(d["direct_cpu"]), ""],
            [client, "through gateway", ms(d["gw_p50"]), ms(d["gw_p99"]), ms(d["gw_cpu"]), ""],
            [client, "**added**", f"**{ms(d['added_p50'])}**", f"**{ms(d['added_p99'])}**",
             ms(d["added_cpu"]),
             f"p50 ≤ 2: {verdict(d['added_p50'], TARGETS['added_p50'])}; "
             f"p99 ≤ 5: {verdict(d['added_p99'], TARGETS['added_p99'])}"],
        ]  # fmt: skip
    parts.append(table(
        ["client", "path", "p50 ms", "p99 ms", "process CPU ms/call", "target"], rows
    ))  # fmt: skip
    parts.append(
        f"\nPostgres backend CPU per gateway call: {lat_m['pg_cpu_per_gw_call']:.2f} ms. "
        "Process CPU is client + gateway + fake on the one loop; the direct row is client + "
        "fake, so the added CPU is the gateway's own."
    )

    parts += ["", "## 2. Streaming chat completion (aiohttp), sequential", ""]
    rows = [
        ["time to first byte", ms(st_m["direct_ttft_p50"]), ms(st_m["gw_ttft_p50"]),
         f"**{ms(st_m['added_ttft_p50'])}**", ms(st_m["direct_ttft_p99"]),
         ms(st_m["gw_ttft_p99"]), ms(st_m["added_ttft_p99"]),
         f"≤ 2 ms at p50: {verdict(st_m['added_ttft_p50'], TARGETS['added_ttft'])}"],
        ["time to end of stream", ms(st_m["direct_total_p50"]), ms(st_m["gw_total_p50"]),
         ms(st_m["added_total_p50"]), ms(st_m["direct_total_p99"]), ms(st_m["gw_total_p99"]),
         ms(st_m["added_total_p99"]), "(includes settlement)"],
    ]  # fmt: skip
    parts.append(table(
        ["", "direct p50", "gateway p50", "added p50", "direct p99", "gateway p99", "added p99",
         "target"], rows,
    ))  # fmt: skip
    parts.append(
        "\nThe gateway sends its first byte only after the reservation's append (a commit) and "
        "the upstream's response headers."
    )

    parts += ["", "## 3. Throughput (budgets on), aiohttp client in the same process", ""]
    rows = []
    labels = {
        "direct": "direct to fake",
        "many": "gateway, one run per worker",
        "one": "gateway, all workers on one run",
    }
    for c in s.concurrencies:
        for name in ("direct", "many", "one"):
            t = r.tp[(c, name)]
            target = "" if name == "direct" else (
                f"≥ 1,000: {verdict(t['calls_per_s'], TARGETS['calls_per_s'], True)}"
            )  # fmt: skip
            rows.append([
                str(c), labels[name], f"**{t['calls_per_s']:.0f}**", ms(t["p50"]), ms(t["p99"]),
                f"{t['errors']:.0f}", f"{t['proc_cores']:.2f}", ms(t["proc_ms_per_call"]),
                f"{t['pg_cores']:.2f}", ms(t["pg_ms_per_call"]),
                f"{t['machine_busy'] * 100:.0f}%", target,
            ])  # fmt: skip
    parts.append(table(
        ["conc.", "path", "calls/s", "p50 ms", "p99 ms", "errors", "process cores",
         "process CPU ms/call", "PG backends cores", "PG CPU ms/call", "machine busy",
         "target"], rows,
    ))  # fmt: skip
    parts.append(
        "\nCalls within one run serialise on that run: RunCache holds the run's lock for the "
        "reservation append and the settlement append (expected-version appends to the run's "
        "stream), so one run takes at most ~1/(those round trips) calls "
        "a second whatever the concurrency, and its run grows by thousands of steps in the "
        "window (the fold and loop check are O(steps), section 5). Client, gateway and fake "
        "share one event loop, so the process can use one core at most; direct calls show "
        "what the client and fake cost."
    )

    ph = r.phases
    assert ph is not None
    parts += ["", "## 4. Where one gateway call's time goes", ""]
    rows = [[name, ms(mean), ms(p50)] for name, mean, p50 in ph.rows]
    timed = sum(mean for _, mean, _ in ph.rows)
    rows.append(["everything else (HTTP in/out, JSON, fingerprint, fold, summary encode, "
                 "client, and waiting for the loop)", ms(ph.gateway_ms - timed), ""])  # fmt: skip
    rows.append(["**gateway call, total (client view)**", f"**{ms(ph.gateway_ms)}**", ""])
    rows.append(["direct call, total (for comparison)", ms(ph.direct_ms), ""])
    for label, p50 in ph.references.items():
        rows.append([f"reference: {label}", "", ms(p50)])
    parts.append(table(["awaited operation (sequential calls)", "mean ms", "p50 ms"], rows))
    parts += [
        "",
        "Statements through the store's pool per gateway call (background work that the "
        "call causes included):",
        "",
    ]
    stmts = sorted(ph.statements.items(), key=lambda kv: -kv[1])
    stmts.append(("**total**", sum(ph.statements.values())))
    parts.append(table(["statement", "per call"], [[k, f"{v:.2f}"] for k, v in stmts]))
    parts += ["", f"cProfile (CPU time) of {s.profile_calls} sequential gateway calls (client "
              "and fake included, same loop), top own time:", ""]  # fmt: skip
    parts.append(table(["function", "calls per gateway call", "own CPU µs per call"],
                       r.own_rows))  # fmt: skip
    parts += ["", "Cumulative CPU time of selected functions:", ""]
    parts.append(table(["function", "cumulative CPU µs per gateway call"], r.cum_rows))

    lr = r.long
    parts += ["", "## 5. Run length", ""]
    rows = [
        ["p50 ms", ms(lr["p50"]["fresh"]), ms(lr["p50"]["long"]), ms(lr["p50"]["long_lean"])],
        ["p99 ms", ms(lr["p99"]["fresh"]), ms(lr["p99"]["long"]), ms(lr["p99"]["long_lean"])],
    ]
    labels_parts = sorted({k for p in lr["parts"].values() for k in p})
    for label in labels_parts:
        rows.append([f"{label}, ms per call"] + [
            f"{lr['parts'][n].get(label, 0.0):.3f}" for n in ("fresh", "long", "long_lean")
        ])  # fmt: skip
    parts.append(table(
        ["gateway call", "fresh run (< 300 steps)", f"run with {lr['steps']} steps",
         "same, run_summary without steps"], rows,
    ))  # fmt: skip
    micro = lr["micro"]
    parts.append(
        f"\nrun_summary(state) alone (CPU ms, median of 20): fresh run "
        f"{micro['fresh']['current']:.3f} → lean {micro['fresh']['lean']:.3f}; "
        f"{lr['steps']}-step run {micro['long']['current']:.3f} → lean "
        f"{micro['long']['lean']:.3f} (same dict). First call after the steps were appended "
        f"through the process's run-state repository (folded as they were appended): "
        f"{lr['catch_up_ms']:.0f} ms."
    )
    if micro["long"]["current"] < 5 * max(micro["long"]["lean"], 0.001):
        parts.append("This code's run_summary already skips the steps.")

    parts += ["", "## 6. What-if (monkeypatched in this process only)", ""]
    base = r.whatif["baseline"]
    rows = []
    for key, label in VARIANTS.items():
        w = r.whatif[key]
        rows.append([
            label, ms(w["gw_p50"]), f"**{ms(w['added_p50'])}**", ms(w["added_p99"]),
            f"{w['added_p50'] - base['added_p50']:+.2f}", ms(w["added_cpu"]),
            f"{w['calls_per_s']:.0f}",
        ])  # fmt: skip
    parts.append(table(
        ["variant", "gateway p50 ms", "added p50 ms", "added p99 ms", "Δ added p50",
         "added CPU ms/call", "calls/s (16 workers, 16 runs)"], rows,
    ))  # fmt: skip
    parts.append(
        f"\n{s.whatif_calls} call pairs per variant, the variants taking turns in slices of "
        f"{WHATIF_SLICE} pairs (so that the machine's load falls on all alike); throughput: "
        f"a {s.whatif_seconds:.0f} s window per variant and repetition, median of "
        f"{s.whatif_reps}."
    )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter windows")
    parser.add_argument(
        "--projectors", action="store_true",
        help="run the read-model projectors inside the app too (off: the gateway alone)",
    )  # fmt: skip
    args = parser.parse_args()
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    asyncio.run(run(QUICK if args.quick else FULL, admin_dsn, args.projectors))


if __name__ == "__main__":
    main()
