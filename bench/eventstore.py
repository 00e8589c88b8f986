"""Event store benchmark: ours against plain asyncpg on the same Postgres.

Run from the repo root: ``.venv/bin/python bench/eventstore.py [--quick]``. It creates a
throw-away database on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local one),
migrates it, measures, drops it and prints a Markdown table. Not a test: ``make test`` never
runs it, and its numbers depend on the machine (print the machine info alongside them).

Measurements
1. single-event append vs a raw autocommit INSERT of an event-sized row (one row, one commit),
   1 and 16 writers; the store commits concurrent appends in groups, and the table says how
   many appends shared each commit;
2. batch append of 100 events per call at 1, 2, 4 and 8 writers (raw: one unnest INSERT);
3. catch-up ``read_all`` in pages of 5000 (raw: the same keyset query without the fence
   and without building RecordedEvents);
4. commit -> subscriber latency with 100 in-process subscribers and a paced writer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

import asyncpg  # noqa: E402
import msgspec  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import SERVER_SETTINGS, PostgresEventStore  # noqa: E402
from eventstore.types import NO_STREAM, START, Cursor, ExpectedVersion, NewEvent  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
POOL_SIZE = 20  # PostgresEventStore.connect's default max_size; the raw pool gets the same
_encode = msgspec.json.encode

RAW_TABLE = """
CREATE TABLE bench_raw (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL,
    stream_id   text NOT NULL,
    event_type  text NOT NULL,
    data        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
)"""
RAW_INSERT = """
INSERT INTO bench_raw (event_id, stream_id, event_type, data) VALUES ($1, $2, $3, $4::jsonb)"""
RAW_INSERT_BATCH = """
INSERT INTO bench_raw (event_id, stream_id, event_type, data)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[])"""
# The store's read_all query minus the fence, read into plain asyncpg Records.
RAW_READ = """
SELECT global_position, transaction_id::text AS transaction_id, stream_id, category,
       stream_version, event_id, event_type, schema_version, data::text AS data,
       metadata::text AS metadata, recorded_at
  FROM events
 WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2::bigint)
 ORDER BY events.transaction_id, events.global_position  -- qualified: not the text alias
 LIMIT $3"""
# Filler for the catch-up read when the append phases wrote too few events; same data shape.
FILL_EVENTS = """
INSERT INTO events (stream_id, category, stream_version, event_id, event_type, data)
SELECT 'fill-' || $1::text, 'fill', g, gen_random_uuid(), 'StepCompleted',
       jsonb_build_object('run_id', gen_random_uuid()::text, 'step', g, 'tool', 'web_search',
                          'status', 'ok', 'input_ref', 'sha256:' || md5(g::text) || md5($1::text),
                          'tokens', jsonb_build_object('prompt', 1234, 'completion', 456),
                          'cost_usd', 0.0123, 't0', 0.0)
  FROM generate_series(1, $2::int) g"""


def event_data(step: int, t0: float = 0.0) -> dict[str, Any]:
    """A realistic ~200-byte event body (a step result that refers to its bulky payload)."""
    return {
        "run_id": "0b7c6f1e-5d0c-4d4a-9a43-6c0f4b1d2e3a",
        "step": step,
        "tool": "web_search",
        "status": "ok",
        "input_ref": "sha256:" + "ab" * 32,
        "tokens": {"prompt": 1234, "completion": 456},
        "cost_usd": 0.0123,
        "t0": t0,
    }


# -- measurement helpers ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class Load:
    """The outcome of running one operation in a closed loop with N concurrent callers."""

    ops: int
    seconds: float
    latencies: list[float] = field(repr=False)
    client_cpu: float = 0.0  # CPU seconds of this process in the window
    server_cpu: float | None = None  # of the database's server backends; None if unreadable

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


class CpuMeter:
    """CPU seconds spent by this process and by the server backends of the bench database.

    Throughput on a shared machine moves with everyone else's load (and a side with more
    processes gets more of the CPU); the CPU each operation costs barely does. Server
    backends are read from ``/proc``, so only for a Postgres on this machine."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._pids: list[int] = []

    async def refresh(self) -> None:
        rows = await self._pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        self._pids = [int(row[0]) for row in rows]

    def read(self) -> tuple[float, float | None]:
        server: float | None = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self._pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue  # a backend that exited; what it spent is lost, a few ticks at most
            except OSError:
                server = None
                break
            server = (server or 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return time.process_time(), server


async def closed_loop(
    make_worker: Callable[[int], Callable[[], Awaitable[None]]],
    writers: int,
    duration: float,
    warmup: float,
    meter: CpuMeter | None = None,
) -> Load:
    """Each writer calls its op back to back; only calls ending in the window are counted."""
    measuring = False
    stop = False
    latencies: list[float] = []

    async def run(op: Callable[[], Awaitable[None]]) -> None:
        while not stop:
            t0 = time.perf_counter()
            await op()
            if measuring:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(run(make_worker(i))) for i in range(writers)]
    await asyncio.sleep(warmup)
    if meter is not None:
        await meter.refresh()  # the pools' backends, and any the warm-up opened
    client0, server0 = meter.read() if meter else (0.0, None)
    measuring = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    measuring = False
    elapsed = time.perf_counter() - started
    client1, server1 = meter.read() if meter else (0.0, None)
    stop = True
    await asyncio.gather(*tasks)
    server = None if server0 is None or server1 is None else server1 - server0
    return Load(len(latencies), elapsed, latencies, client1 - client0, server)


Make = Callable[[int], Callable[[], Awaitable[None]]]


async def paired(
    base: Make,
    ours: Make,
    writers: int,
    args: argparse.Namespace,
    meter: CpuMeter | None = None,
) -> Comparison:
    """Alternate baseline and ours in short rounds, so that drift and background load on a
    shared machine hit both sides alike; the ratio is the median of the per-round ratios."""
    per_round = args.duration / args.rounds
    rounds = []
    for _ in range(args.rounds):
        b = await closed_loop(base, writers, per_round, args.warmup, meter)
        o = await closed_loop(ours, writers, per_round, args.warmup, meter)
        rounds.append((b, o))
    return Comparison(
        merge([b for b, _ in rounds]),
        merge([o for _, o in rounds]),
        statistics.median(o.rate / b.rate for b, o in rounds),
    )


def merge(loads: list[Load]) -> Load:
    servers = [x.server_cpu for x in loads]
    return Load(
        sum(x.ops for x in loads),
        sum(x.seconds for x in loads),
        [t for x in loads for t in x.latencies],
        sum(x.client_cpu for x in loads),
        None if None in servers else sum(s or 0.0 for s in servers),
    )


@dataclass
class Comparison:
    base: Load
    ours: Load
    ratio: float  # ours/base throughput


# -- 1 and 2: appends --------------------------------------------------------------------------


def raw_single(pool: asyncpg.Pool, writer: int) -> Callable[[], Awaitable[None]]:
    stream = f"raw-{writer}-{uuid.uuid4().hex[:8]}"
    step = 0

    async def op() -> None:
        nonlocal step
        step += 1
        data = _encode(event_data(step)).decode()
        await pool.execute(RAW_INSERT, uuid.uuid4(), stream, "StepCompleted", data)

    return op


def ours_append(store: PostgresEventStore, batch: int, tag: str = "") -> Callable[[int], Any]:
    def make(writer: int) -> Callable[[], Awaitable[None]]:
        stream = f"bench-{tag}{writer}-{uuid.uuid4().hex[:8]}"
        version: ExpectedVersion = NO_STREAM
        step = 0

        async def op() -> None:
            nonlocal version, step
            events = []
            for _ in range(batch):
                step += 1
                events.append(NewEvent("StepCompleted", event_data(step)))
            result = await store.append(stream, events if batch > 1 else events[0], version)
            version = result.stream_version

        return op

    return make


def raw_batch(pool: asyncpg.Pool, batch: int) -> Callable[[int], Any]:
    def make(writer: int) -> Callable[[], Awaitable[None]]:
        stream = f"raw-{writer}-{uuid.uuid4().hex[:8]}"
        step = 0

        async def op() -> None:
            nonlocal step
            ids, datas = [], []
            for _ in range(batch):
                step += 1
                ids.append(uuid.uuid4())
                datas.append(_encode(event_data(step)).decode())
            await pool.execute(
                RAW_INSERT_BATCH, ids, [stream] * batch, ["StepCompleted"] * batch, datas
            )

        return op

    return make


# -- 3: catch-up reads -------------------------------------------------------------------------


async def ensure_events(pool: asyncpg.Pool, wanted: int) -> int:
    have = int(await pool.fetchval("SELECT count(*) FROM events"))
    chunk = 50_000
    while have < wanted:
        n = min(chunk, wanted - have)
        await pool.execute(FILL_EVENTS, uuid.uuid4().hex, n)
        have += n
    await pool.execute("VACUUM ANALYZE events")
    return have


async def read_ours(store: PostgresEventStore, count: int, page_size: int) -> tuple[int, float]:
    cursor: Cursor = START
    read = 0
    started = time.perf_counter()
    while read < count:
        page = await store.read_all(cursor, limit=page_size)
        if not page.events:
            break
        read += len(page.events)
        cursor = page.cursor
    return read, time.perf_counter() - started


async def read_raw(pool: asyncpg.Pool, count: int, page_size: int) -> tuple[int, float]:
    tx, pos = "0", 0
    read = 0
    started = time.perf_counter()
    while read < count:
        rows = await pool.fetch(RAW_READ, tx, pos, page_size)
        if not rows:
            break
        read += len(rows)
        tx, pos = rows[-1][1], rows[-1][0]
    return read, time.perf_counter() - started


# -- 4: delivery latency -----------------------------------------------------------------------


@dataclass
class Delivery:
    from_call: list[float]  # subscriber receive - perf_counter just before append()
    from_return: list[float]  # subscriber receive - perf_counter when append() returned
    missing: int


SENTINEL_TX = 2**63 - 1


async def delivery(dsn: str, subscribers: int, events: int, rate: float) -> Delivery:
    store = await PostgresEventStore.connect(dsn)  # production defaults: poll 0.5 s, NOTIFY
    try:
        return await _delivery(store, subscribers, events, rate)
    finally:
        await store.close()


async def head_is_sane(store: PostgresEventStore) -> tuple[bool, Cursor]:
    """head() must be a real position: a subscription from it, and the tailer that starts at
    it, must see the next append. A cursor past every transaction id would see nothing."""
    head = await store.head()
    return head.transaction_id < SENTINEL_TX, head


async def _delivery(
    store: PostgresEventStore, subscribers: int, events: int, rate: float
) -> Delivery:
    stream = f"probe-{uuid.uuid4().hex[:8]}"
    head = await store.head()
    received: list[list[tuple[int, float, float]]] = [[] for _ in range(subscribers)]
    warmed = [asyncio.Event() for _ in range(subscribers)]

    async def listen(i: int) -> None:
        async with store.subscribe(head) as sub:
            async for event in sub:
                now = time.perf_counter()
                if event.event_type == "Warmup":
                    warmed[i].set()
                    continue
                received[i].append((event.data["step"], event.data["t0"], now))
                if len(received[i]) == events:
                    return

    tasks = [asyncio.create_task(listen(i)) for i in range(subscribers)]
    # A first event that every subscriber must see proves all of them are attached and live.
    await store.append(stream, NewEvent("Warmup", {}), NO_STREAM)
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in warmed)), 10)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return Delivery([], [], subscribers * events)

    returned: dict[int, float] = {}
    start = time.perf_counter()
    for step in range(1, events + 1):
        delay = start + step / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        await store.append(stream, NewEvent("Probe", event_data(step, t0)), step)
        returned[step] = time.perf_counter()
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    from_call = [now - t0 for per_sub in received for _, t0, now in per_sub]
    from_return = [now - returned[step] for per_sub in received for step, _, now in per_sub]
    return Delivery(from_call, from_return, subscribers * events - len(from_call))


# -- report ------------------------------------------------------------------------------------


@dataclass
class Row:
    measurement: str
    ours: str
    baseline: str
    ratio: str
    passed: bool | None

    def cells(self) -> list[str]:
        verdict = "" if self.passed is None else ("PASS" if self.passed else "**FAIL**")
        return [self.measurement, self.ours, self.baseline, self.ratio, verdict]


def markdown(rows: list[Row]) -> str:
    header = ["measurement", "ours", "baseline", "ratio/target", "pass"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def fmt_load(load: Load, unit: str = "ops/s", scale: int = 1) -> str:
    text = f"{load.rate * scale:,.0f} {unit} (p50 {load.p(50):.2f} / p99 {load.p(99):.2f} ms)"
    if load.ops and load.server_cpu is not None:
        per = 1e6 / (load.ops * scale)  # µs per op (or per event)
        total, server = (load.client_cpu + load.server_cpu) * per, load.server_cpu * per
        text += f"; CPU {total:.0f} µs/{unit.split('/')[0].rstrip('s')} ({server:.0f} server)"
    return text


def memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def git_state() -> str:
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def machine_info(pool: asyncpg.Pool) -> str:
    settings = {}
    for name in ("server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level"):
        settings[name] = await pool.fetchval(f"SHOW {name}")
    pg = ", ".join(f"{k}={v}" for k, v in settings.items())
    return (
        f"- machine: nproc={os.cpu_count()}, memory={memory_gib():.1f} GiB, "
        f"{platform.machine()} {platform.system()} {platform.release()}\n"
        f"- python {platform.python_version()}, asyncpg {asyncpg.__version__}, "
        f"msgspec {msgspec.__version__}, event loop {type(asyncio.get_running_loop()).__name__}\n"
        f"- postgres: {pg}\n"
        f"- code: {git_state()}"
    )


# -- main --------------------------------------------------------------------------------------


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


async def run(args: argparse.Namespace) -> str:
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    name = f"papayya_bench_{uuid.uuid4().hex[:10]}"
    await admin(admin_dsn, f'CREATE DATABASE "{name}"')
    try:
        dsn = with_database(admin_dsn, name)
        await migrate(dsn)
        return await measure(dsn, args)
    finally:
        await admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class BackgroundLoad:
    """Samples how many other sessions on the server are busy: a shared server (a test suite
    cloning databases, say) skews throughput, and any transaction holding an xid anywhere on
    the server holds the read fence back, delaying delivery."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, dsn: str) -> None:
        self._conn = await asyncpg.connect(dsn)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            n = await self._conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle'"
                " AND backend_type = 'client backend'"
                " AND datname IS DISTINCT FROM current_database()"
            )
            self.samples.append(int(n))
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._conn.close()

    def describe(self) -> str:
        if not self.samples:
            return "not sampled"
        busy = sum(1 for n in self.samples if n) / len(self.samples)
        return (
            f"busy in {busy:.0%} of {len(self.samples)} samples, at most {max(self.samples)} "
            "sessions in other databases" + (" (numbers may be skewed)" if busy > 0.1 else "")
        )


async def measure(dsn: str, args: argparse.Namespace) -> str:
    busy = BackgroundLoad()
    await busy.start(dsn)
    try:
        return await _measure(dsn, args, busy)
    finally:
        await busy.stop()


async def _measure(dsn: str, args: argparse.Namespace, busy: BackgroundLoad) -> str:
    # Same session settings as the store (notably jit=off) so that only the code differs.
    raw = await asyncpg.create_pool(
        dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, server_settings=SERVER_SETTINGS
    )
    store = await PostgresEventStore.connect(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        await raw.execute(RAW_TABLE)
        info = await machine_info(raw)
        rows = await single_appends(store, raw, args)
        rows += await batch_appends(store, raw, args)
        rows += await catch_up(store, raw, args)
        head_ok, head = await head_is_sane(store)
    finally:
        await store.close()
        await raw.close()
    if not head_ok:
        rows.append(
            Row(
                "store.head() is a real position",
                f"returned {head} (after every possible event)",
                "",
                "tailer and subscribe(head()) never see an event",
                False,
            )
        )
    delivery_rows, delivery_note = await deliveries(dsn, args)
    rows += delivery_rows
    size = len(_encode(event_data(12345, time.perf_counter())))
    notes = (
        f"- event body {size} bytes of JSON; {delivery_note}\n"
        f"- appends: closed loop, per cell {args.rounds} alternating rounds of raw then ours, "
        f"{args.duration / args.rounds:g} s measured after {args.warmup:g} s warm-up each; "
        f"ratio = median of per-round ratios; pools of {POOL_SIZE}; CPU = this process plus "
        "the bench database's server backends, per op (per event for batches), which the "
        "machine's other load moves far less than throughput\n"
        f"- other sessions active on the server during the run: {busy.describe()}"
    )
    return f"{info}\n{notes}\n\n{markdown(rows)}"


async def appends_per_commit(pool: asyncpg.Pool, tag: str) -> float:
    """How many appends shared a transaction, on average, in the streams of one cell."""
    value = await pool.fetchval(
        "SELECT count(DISTINCT (stream_id, transaction_id))::float8"
        "       / greatest(count(DISTINCT transaction_id), 1)"
        "  FROM events WHERE stream_id LIKE $1",
        f"bench-{tag}%",
    )
    return float(value)


async def single_appends(
    store: PostgresEventStore, raw: asyncpg.Pool, args: argparse.Namespace
) -> list[Row]:
    meter = CpuMeter(raw)
    rows = []
    # 1 writer: nothing to group with, so the store must add nothing to a lone append.
    # 16 writers: the raw side commits each row alone; the store commits appends in groups.
    for writers, target in ((1, 0.70), (16, 1.00)):
        progress(f"single-event append, {writers} writer(s)")
        tag = f"s{writers}x"
        c = await paired(
            lambda i: raw_single(raw, i), ours_append(store, 1, tag), writers, args, meter
        )
        grouped = await appends_per_commit(raw, tag)
        rows.append(
            Row(
                f"1-event append, {writers} writer(s); {grouped:.1f} appends per commit",
                fmt_load(c.ours),
                fmt_load(c.base),
                f"{c.ratio:.2f} (≥ {target:.2f})",
                c.ratio >= target,
            )
        )
    return rows


async def batch_appends(
    store: PostgresEventStore, raw: asyncpg.Pool, args: argparse.Namespace
) -> list[Row]:
    meter = CpuMeter(raw)
    rows = []
    best: tuple[float, int] = (0.0, 0)
    for writers in (1, 2, 4, 8):
        progress(f"batch append x100, {writers} writer(s)")
        tag = f"b{writers}x"
        c = await paired(raw_batch(raw, 100), ours_append(store, 100, tag), writers, args, meter)
        best = max(best, (c.ours.rate * 100, writers))
        grouped = await appends_per_commit(raw, tag)
        rows.append(
            Row(
                f"batch append x100, {writers} writer(s); {grouped:.1f} appends per commit",
                fmt_load(c.ours, "events/s", 100),
                fmt_load(c.base, "events/s", 100),
                f"{c.ratio:.2f}",
                None,
            )
        )
    rows.append(
        Row(
            f"batch append x100, best ({best[1]} writer(s))",
            f"{best[0]:,.0f} events/s",
            "",
            "≥ 60,000 events/s",
            best[0] >= 60_000,
        )
    )
    return rows


async def catch_up(
    store: PostgresEventStore, raw: asyncpg.Pool, args: argparse.Namespace
) -> list[Row]:
    progress(f"catch-up read_all of {args.read_events:,} events")
    total = await ensure_events(raw, args.read_events)
    # Warm the page cache and both statement caches before timing either side.
    await read_ours(store, min(total, 20_000), args.page_size)
    await read_raw(raw, min(total, 20_000), args.page_size)
    n_raw, s_raw = await read_raw(raw, args.read_events, args.page_size)
    n_ours, s_ours = await read_ours(store, args.read_events, args.page_size)
    rate_ours, rate_raw = n_ours / s_ours, n_raw / s_raw
    return [
        Row(
            f"catch-up read_all, {n_ours:,} events of {total:,}, pages of {args.page_size}",
            f"{rate_ours:,.0f} events/s",
            f"{rate_raw:,.0f} events/s (raw Records, no fence)",
            f"{rate_ours / rate_raw:.2f}; target ≥ 100,000/s",
            rate_ours >= 100_000,
        )
    ]


async def deliveries(dsn: str, args: argparse.Namespace) -> tuple[list[Row], str]:
    n = args.subscribers
    progress(f"delivery to {n} subscribers, {args.events} events at {args.rate:g}/s")
    result = await delivery(dsn, n, args.events, args.rate)
    rows = []
    target = "p50 ≤ 20, p99 ≤ 150 ms"
    for label, values in (
        ("before append()", result.from_call),
        ("append() returned", result.from_return),
    ):
        name = f"delivery, {n} subscribers, from {label}"
        if not values:
            rows.append(Row(name, "nothing delivered in 10 s", "", target, False))
            continue
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        rows.append(
            Row(
                name,
                f"p50 {p50:.1f} / p99 {p99:.1f} ms (max {max(values) * 1000:.1f})",
                "",
                target,
                p50 <= 20 and p99 <= 150 and result.missing == 0,
            )
        )
    note = f"{n} x {args.events} deliveries at {args.rate:g} events/s, {result.missing} missing"
    return rows, note


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~30 s)")
    parser.add_argument("--duration", type=float, help="seconds measured per side per cell")
    parser.add_argument("--rounds", type=int, help="alternating raw/ours rounds per cell")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per round")
    parser.add_argument("--read-events", type=int, help="events for the catch-up read")
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, help="events the delivery writer appends")
    parser.add_argument("--rate", type=float, default=200.0, help="delivery writer events/s")
    args = parser.parse_args()
    defaults = (1.5, 1, 0.3, 50_000, 200) if args.quick else (7.5, 3, 0.5, 200_000, 500)
    names = ("duration", "rounds", "warmup", "read_events", "events")
    for name, default in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    report = asyncio.run(run(args))
    print(report)
    print(f"\n_total {time.perf_counter() - started:.0f} s_")


if __name__ == "__main__":
    main()
