"""Checkpoint benchmark: the SDK's ``run.task`` against DBOS steps, and ``state_at``.

Run from the repo root: ``.venv/bin/python bench/checkpoint.py [--quick] [--only PARTS]
[--cprofile]`` (``--help`` for the rest). It
creates throw-away databases on the server of ``PAPAYYA_BENCH_DATABASE_URL`` (default: the
local one), measures, drops them and prints Markdown tables. Not a test: ``make test`` never
runs it, and its numbers depend on the machine (it prints the machine info alongside them).

Measurements
1. per-task overhead of ``run.task`` on a no-op function (wall time of each call minus the
   function's own time), ``client = papayya(dsn); run = client.run("bench")``, a fresh run
   per round; also at the end of a 10,000-step run, where run-length costs show;
2. DBOS on the same server: one workflow per round with as many no-op ``@DBOS.step()`` steps,
   each step call timed inside the workflow. DBOS runs in a child process (one per round, the
   rounds interleaved with ours) so its background threads never share a process with ours;
   it creates its own system database, which is dropped at the end;
3. ``Runs(store).state_at(run_id, 5000)`` on a 10,000-step run, end to end (read from Postgres,
   decode, fold) and split into its parts;
4. where one task's time goes: the thread hop to the SDK's loop, Postgres round trips (with
   and without the pool's reset query), the commit flush, and the Python work of an append.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
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
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULT_MARK = "CHECKPOINT-BENCH-RESULT "
WARMUP_TASKS = 20
BIG_RUN_STEPS = 10_000
STATE_AT_STEP = 5000
BUILD_BATCH_STEPS = 100  # steps per append while building the big run (300 events)

# -- helpers -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def med(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}"


def spread(values: list[float], fmt: Callable[[float], str] = ms) -> str:
    """``median (min-max)`` over rounds."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(med(values))} ({fmt(min(values))}-{fmt(max(values))})"


def progress(message: str) -> None:
    print(f"[checkpoint-bench] {message}", file=sys.stderr, flush=True)


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def admin(dsn: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def memory_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "papayya", "eventstore", "sql"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return head + (" (uncommitted changes in papayya/eventstore/sql)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def machine_info(dsn: str) -> str:
    import asyncpg
    import msgspec

    conn = await asyncpg.connect(dsn)
    try:
        settings = {}
        for name in (
            "server_version",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "shared_buffers",
        ):
            settings[name] = await conn.fetchval(f"SHOW {name}")
    finally:
        await conn.close()
    try:
        from importlib.metadata import version

        dbos_version = version("dbos")
    except Exception:
        dbos_version = "not installed"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = ""
    pg = ", ".join(f"{k}={v}" for k, v in settings.items())
    return (
        f"- machine: nproc={cpus}, memory={memory_gib():.1f} GiB, "
        f"{platform.machine()} {platform.system()} {platform.release()}, {load} at start\n"
        f"- python {platform.python_version()}, asyncpg {asyncpg.__version__}, "
        f"msgspec {msgspec.__version__}, dbos {dbos_version}\n"
        f"- postgres: {pg}\n"
        f"- code: {git_state()}"
    )


# -- 1. ours: run.task ------------------------------------------------------------------------


class NoOp:
    """A no-op task that measures its own time, so it can be subtracted."""

    def __init__(self) -> None:
        self.own = 0.0

    def __call__(self) -> None:
        t = time.perf_counter()
        self.own = time.perf_counter() - t


def time_tasks(run: Any, n: int, label: str = "noop") -> list[float]:
    fn = NoOp()
    # Wrapped once, called n times (as a DBOS step is decorated once): each call is a step,
    # numbered noop, noop#2…
    task = run.task(label, fn)
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        task()
        out.append(clock() - t - fn.own)
    return out


# -- 2. DBOS (child process) ------------------------------------------------------------------


def dbos_child(dsn: str, n: int, warmup: int) -> None:
    """Launch DBOS on ``dsn`` (its system database), run a warm-up workflow and a timed one."""
    import logging

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config={"name": "papayya-bench", "system_database_url": dsn, "log_level": "WARNING"})
    own = [0.0]
    clock = time.perf_counter

    @DBOS.step()
    def noop() -> None:
        t = clock()
        own[0] = clock() - t

    @DBOS.workflow()
    def workflow(count: int) -> list[float]:
        out = []
        for _ in range(count):
            t = clock()
            noop()
            out.append(clock() - t - own[0])
        return out

    DBOS.launch()
    try:
        workflow(warmup)
        times = workflow(n)
    finally:
        DBOS.destroy()
    print(RESULT_MARK + json.dumps(times), flush=True)


def run_dbos_round(dsn: str, n: int) -> list[float] | str:
    """One DBOS round in a child process: its per-step times, or why it could not run."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--dbos-child", dsn, "--tasks", str(n)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return [float(x) for x in json.loads(line[len(RESULT_MARK) :])]
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return "DBOS failed: " + " | ".join(tail)


# -- 3. state_at on a big run ------------------------------------------------------------------


def step_events(ev: Any, n: int) -> list[Any]:
    label = f"step#{n + 1}" if n else "step"
    return [
        ev.StepStarted(step_number=n, step_type="checkpoint", label=label),
        ev.CheckpointSaved(
            step_number=n,
            label=label,
            fingerprint=f"{n:064x}",
            result={"i": n, "ok": True},
            duration_ms=0.01,
        ),
        ev.StepCompleted(step_number=n, duration_ms=0.01),
    ]


async def build_big_run(store: Any, run_id: str, steps: int) -> float:
    from papayya.domain import events as ev
    from papayya.runs import Runs

    runs = Runs(store)
    started = time.perf_counter()
    state = await runs.append(
        None,
        [
            ev.RunQueued(run_id=run_id, project_id="local", agent_id="bench", trigger="sdk"),
            ev.RunStarted(attempt=1, worker="bench"),
        ],
    )
    for first in range(0, steps, BUILD_BATCH_STEPS):
        batch = [
            e
            for n in range(first, min(first + BUILD_BATCH_STEPS, steps))
            for e in step_events(ev, n)
        ]
        state = await runs.append(state, batch)
    return time.perf_counter() - started


async def state_at_bench(dsn: str, run_id: str, repeats: int) -> dict[str, Any]:
    """Time ``Runs.state_at`` end to end, then its parts: ``Runs.events`` (read + decode the
    whole run), the store's read alone, the decode alone and the pure fold."""
    from eventstore.postgres import PostgresEventStore
    from papayya.domain import events as ev
    from papayya.domain.fold import fold, state_at
    from papayya.runs import Runs, run_events, run_stream

    store = await PostgresEventStore.connect(dsn, min_size=1, max_size=4)
    stream = run_stream(run_id)
    # The lean read (type, data JSON, recorded_at) where the store has it, else RecordedEvents.
    lean = hasattr(store, "read_stream_data") and hasattr(ev, "decode_stored")

    async def read() -> Any:
        return await (store.read_stream_data(stream) if lean else store.read_stream(stream))

    def decode(rows: Any) -> list[Any]:
        if not lean:
            return run_events(rows)
        events = [ev.decode_stored(t, data, at) for t, data, at in rows]
        return [e for e in events if isinstance(e, ev.RunEvent)]

    try:
        build = await build_big_run(store, run_id, BIG_RUN_STEPS)
        runs = Runs(store)
        keys = ("e2e", "events", "read", "decode", "state_at", "fold_all", "read_recorded")
        result: dict[str, list[float]] = {k: [] for k in keys}
        check = await runs.state_at(run_id, STATE_AT_STEP)  # warm the statement cache
        assert check.next_step == STATE_AT_STEP + 1, check.next_step
        clock = time.perf_counter
        for _ in range(repeats):
            t = clock()
            await runs.state_at(run_id, STATE_AT_STEP)
            result["e2e"].append(clock() - t)
            t = clock()
            await runs.events(run_id)
            result["events"].append(clock() - t)
            t = clock()
            rows = await read()
            result["read"].append(clock() - t)
            t = clock()
            events = decode(rows)
            result["decode"].append(clock() - t)
            t = clock()
            state_at(events, STATE_AT_STEP)
            result["state_at"].append(clock() - t)
            t = clock()
            fold(events)
            result["fold_all"].append(clock() - t)
            t = clock()
            await store.read_stream(stream)
            result["read_recorded"].append(clock() - t)
        return {"build": build, "count": len(events), "lean": lean, **result}
    finally:
        await store.close()


# -- 4. where a task's time goes ---------------------------------------------------------------


def time_calls(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


async def time_awaits(make: Callable[[], Any], n: int) -> list[float]:
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t = clock()
        await make()
        out.append(clock() - t)
    return out


def small_new_events(n: int) -> list[Any]:
    from eventstore.types import NewEvent

    return [
        NewEvent(type="StepStarted", data={"step_number": n, "step_type": "checkpoint"}),
        NewEvent(type="CheckpointSaved", data={"step_number": n, "label": "x", "result": None}),
        NewEvent(type="StepCompleted", data={"step_number": n, "duration_ms": 0.0}),
    ]


async def _noop_reset(conn: Any) -> None:
    return None


def profile_components(client: Any, dsn: str, n: int) -> list[tuple[str, float, str]]:
    """Median seconds of each piece of the per-task path, measured apart."""
    import asyncpg

    from eventstore.postgres import SERVER_SETTINGS, PostgresEventStore, Q
    from eventstore.types import ANY
    from papayya.domain import events as ev
    from papayya.domain.fold import fold

    loop = client._loop
    store = client._store
    rows: list[tuple[str, float, str]] = []

    async def nothing() -> None:
        return None

    rows.append(
        (
            "thread hop: `loop.call(<no-op coroutine>)`",
            med(time_calls(lambda: loop.call(nothing()), n)),
            "caller thread -> SDK loop -> caller",
        )
    )
    rows.append(
        (
            "`SELECT 1` via `loop.call(pool.fetchval)`",
            med(time_calls(lambda: loop.call(store.pool.fetchval("SELECT 1")), n)),
            "hop + pool acquire + query + release",
        )
    )

    parts_run = client.run("bench-parts")

    async def on_loop() -> dict[str, float]:
        # Every variant gets one call per iteration, round-robin, so that load from other
        # processes falls on all of them alike.
        conn = await asyncpg.connect(dsn, server_settings=SERVER_SETTINGS)
        lax = await asyncpg.connect(
            dsn, server_settings={**SERVER_SETTINGS, "synchronous_commit": "off"}
        )
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_commit (x int)")
        reset = conn.get_reset_query()
        # The store as connect() builds it (the SDK's own pool, without its NOTIFY task), then
        # the same store code on pools with and without asyncpg's reset query on release, and
        # without waiting for the commit's WAL flush (synchronous_commit=off: measuring only,
        # it is not durable).
        stores = {
            "store": await PostgresEventStore.connect(dsn, min_size=1, max_size=4, notify=False)
        }
        for key, settings, pool_reset in (
            ("reset", SERVER_SETTINGS, None),
            ("noreset", SERVER_SETTINGS, _noop_reset),
            ("async_noreset", {**SERVER_SETTINGS, "synchronous_commit": "off"}, _noop_reset),
        ):
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=4, server_settings=settings, reset=pool_reset
            )
            stores[key] = PostgresEventStore(pool, dsn=dsn, notify=False)
        stream = f"bench-raw{uuid.uuid4().hex[:8]}"
        count = [0]

        def append(target: Any, summary: Any = None) -> Callable[[], Any]:
            async def call() -> None:
                count[0] += 1
                await target.append(stream, small_new_events(count[0]), ANY, summary=summary)

            return call

        backend = client._backend
        state = [parts_run.state]

        async def record_task() -> None:
            state[0] = await backend.record_task(state[0], "noop", "f" * 64, b"null", 0.0)

        variants: dict[str, Callable[[], Any]] = {
            "record_task": record_task,
            "pool_select1": lambda: store.pool.fetchval("SELECT 1"),
            "conn_select1": lambda: conn.fetchval("SELECT 1"),
            "reset_query": lambda: conn.execute(reset),
            "insert_sync": lambda: conn.execute("INSERT INTO bench_commit VALUES (1)"),
            "insert_async": lambda: lax.execute("INSERT INTO bench_commit VALUES (1)"),
            "notify": lambda: conn.execute(Q["notify"]),
            "append_summary": append(stores["store"], {"status": "running", "n": 1}),
            **{f"append_{key}": append(other) for key, other in stores.items()},
        }
        times: dict[str, list[float]] = {key: [] for key in variants}
        clock = time.perf_counter
        try:
            for warm in variants.values():
                await warm()
            for _ in range(n):
                for key, call in variants.items():
                    t = clock()
                    await call()
                    times[key].append(clock() - t)
        finally:
            for other in stores.values():
                await other.close()
            await conn.execute("DROP TABLE bench_commit")
            await conn.close()
            await lax.close()
        return {key: med(values) for key, values in times.items()}

    found = loop.call(on_loop())
    rows += [
        (
            "`DirectBackend.record_task` on the loop",
            found["record_task"],
            "a task's whole write without the hop: Python work + append (in a fresh run)",
        ),
        (
            "`SELECT 1` on the loop, pool",
            found["pool_select1"],
            "no hop: pool acquire + query + release",
        ),
        ("`SELECT 1` on the loop, own connection", found["conn_select1"], "one round trip"),
        (
            "asyncpg's pool reset query alone",
            found["reset_query"],
            "`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`",
        ),
        ("1-row INSERT, autocommit", found["insert_sync"], "commit floor: round trip + WAL flush"),
        (
            "1-row INSERT, synchronous_commit=off",
            found["insert_async"],
            "round trip, no flush wait (measuring only)",
        ),
        (
            "NOTIFY, one round trip",
            found["notify"],
            "the store sends it after appends, off the caller's path",
        ),
        (
            "`store.append` 3 small events",
            found["append_store"],
            "the store as `connect()` builds it; no summary",
        ),
        ("`store.append` 3 events + summary", found["append_summary"], "as `Runs.append` calls it"),
        ("  append, pool with asyncpg's reset query", found["append_reset"], "no summary"),
        ("  append, pool without reset query", found["append_noreset"], "no summary"),
        (
            "  append, no reset, synchronous_commit=off",
            found["append_async_noreset"],
            "no wait for the WAL flush: SQL + round trip (measuring only)",
        ),
    ]

    # Python work on the path, at a run of 0 and of BIG_RUN_STEPS steps.

    def state_with(steps: int) -> Any:
        events: list[Any] = [
            ev.RunQueued(run_id="x", project_id="local", agent_id="bench", trigger="sdk"),
            ev.RunStarted(attempt=1, worker="bench"),
        ]
        for i in range(steps):
            events += step_events(ev, i)
        return fold(events)

    for steps in (0, BIG_RUN_STEPS):
        k = max(50, n // 4) if steps else n
        rows += python_parts(state_with(steps), f"run of {steps} steps", k)
    return rows


def python_parts(state: Any, where: str, k: int) -> list[tuple[str, float, str]]:
    """Median seconds of the Python work of one task's append, onto ``state``."""
    from eventstore.types import encode_summary, prepare
    from papayya.domain import events as ev
    from papayya.domain.fold import fold
    from papayya.domain.matcher import task_fingerprint, task_label
    from papayya.runs import run_summary
    from papayya.sdk.direct import encode_result

    step = state.next_step
    events = [
        ev.StepStarted(step_number=step, step_type="checkpoint", label="noop"),
        ev.CheckpointSaved(
            step_number=step, label="noop", fingerprint="f" * 64, result=None, duration_ms=0.01
        ),
        ev.StepCompleted(step_number=step, duration_ms=0.01),
    ]
    new_state = fold(events, state)
    new_events = [ev.to_new_event(e) for e in events]
    summary = run_summary(new_state)
    counts: dict[str, int] = {}

    def caller() -> Any:
        return task_fingerprint(task_label("noop", counts)), encode_result(None)

    return [
        (
            f"caller: label + fingerprint + encode_result ({where})",
            med(time_calls(caller, k)),
            "caller thread",
        ),
        (
            f"fold 3 events onto state ({where})",
            med(time_calls(lambda: fold(events, state), k)),
            "copies the step tuple to a list and back",
        ),
        (
            f"to_new_event x3 ({where})",
            med(time_calls(lambda: [ev.to_new_event(e) for e in events], k)),
            "encode + decode-validate + decode to dict, per event",
        ),
        (
            f"run_summary ({where})",
            med(time_calls(lambda: run_summary(new_state), k)),
            "msgspec.to_builtins of the state",
        ),
        (
            f"prepare + encode_summary ({where})",
            med(time_calls(lambda: (prepare(new_events), encode_summary(summary)), k)),
            "the store encodes the data dicts to JSON again",
        ),
    ]


def cprofile_tasks(client: Any, n: int) -> str:
    """cProfile of ``n`` tasks, in the caller's thread and in the SDK loop's thread."""
    loop = client._loop
    run = client.run("bench-profile")
    time_tasks(run, WARMUP_TASKS)
    caller, background = cProfile.Profile(), cProfile.Profile()
    loop.call(_call(background.enable))
    caller.enable()
    time_tasks(run, n)
    caller.disable()
    loop.call(_call(background.disable))
    out = []
    for name, prof in (("caller thread", caller), ("SDK loop thread", background)):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(14)
        text = buf.getvalue()
        body = text[text.find("   ncalls") :] if "   ncalls" in text else text
        out.append(f"#### {name} (top by tottime, {n} tasks)\n```\n{body.rstrip()}\n```")
    return "\n\n".join(out)


async def _call(fn: Callable[[], Any]) -> None:
    fn()


# -- main --------------------------------------------------------------------------------------


def measure(admin_dsn: str, ours_dsn: str, dbos_dsn: str, args: argparse.Namespace) -> str:
    from papayya.sdk import papayya

    parts = args.only
    info = asyncio.run(machine_info(admin_dsn))
    n = args.tasks
    ours: list[list[float]] = []
    dbos: list[list[float]] = []
    ours_long: list[list[float]] = []
    dbos_error = ""
    sa: dict[str, Any] = {}
    components: list[tuple[str, float, str]] = []
    profile_text = ""
    from bench.limits import lift_limits

    asyncio.run(lift_limits(ours_dsn))
    progress("opening the SDK client")
    client = papayya(ours_dsn)
    try:
        time_tasks(client.run("bench-warmup"), WARMUP_TASKS)
        if "tasks" in parts:
            for r in range(args.rounds):
                progress(f"round {r + 1}/{args.rounds}: ours, {n} tasks")
                ours.append(time_tasks(client.run("bench"), n))
                if args.no_dbos:
                    continue
                progress(f"round {r + 1}/{args.rounds}: DBOS, {n} steps")
                got = run_dbos_round(dbos_dsn, n)
                if isinstance(got, str):
                    dbos_error = got
                    progress(got)
                else:
                    dbos.append(got)
        if "state_at" in parts:
            progress(f"state_at: building a {BIG_RUN_STEPS}-step run")
            big_run = f"big-{uuid.uuid4().hex[:8]}"
            sa = asyncio.run(state_at_bench(ours_dsn, big_run, args.state_repeats))
            if "tasks" in parts:
                progress(f"ours at the end of the {BIG_RUN_STEPS}-step run")
                long_run = client.run("bench", run_id=big_run)  # resumes it: attempt 2, live
                ours_long.append(time_tasks(long_run, args.long_tasks))
        if "profile" in parts:
            progress("profiling the per-task path")
            components = profile_components(client, ours_dsn, args.profile_n)
        if args.cprofile:
            profile_text = cprofile_tasks(client, n)
    finally:
        client.close()

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["## Checkpoint benchmark", "", info, f"- load avg {load} at end", ""]
    if ours:
        lines += task_table(args, ours, ours_long, dbos, dbos_error)
    if sa:
        lines += state_at_table(args, sa)
    if components:
        lines += [
            f"### 4. Where a task's time goes (each part measured apart, median of "
            f"{args.profile_n} calls, us)",
            "",
            "| part | us | what |",
            "|---|---|---|",
        ]
        lines += [f"| {name} | {us(value)} | {what} |" for name, value, what in components]
        lines.append("")
    if profile_text:
        lines += ["### cProfile of the task path", "", profile_text, ""]
    return "\n".join(lines)


def task_table(
    args: argparse.Namespace,
    ours: list[list[float]],
    ours_long: list[list[float]],
    dbos: list[list[float]],
    dbos_error: str,
) -> list[str]:
    lines = [
        f"### 1-2. Per-task / per-step overhead, no-op function "
        f"({len(ours)} round(s) of {args.tasks}; median over rounds (min-max))",
        "",
        "| system | median ms | p99 ms | first 100 median | last 100 median |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, rounds: list[list[float]]) -> str:
        return (
            f"| {name} | {spread([med(t) for t in rounds])} | "
            f"{spread([percentile(t, 99) for t in rounds])} | "
            f"{spread([med(t[:100]) for t in rounds])} | "
            f"{spread([med(t[-100:]) for t in rounds])} |"
        )

    lines.append(row("Papayya `run.task` (fresh run)", ours))
    if ours_long:
        lines.append(
            row(f"Papayya `run.task` after step {BIG_RUN_STEPS} ({args.long_tasks})", ours_long)
        )
    if dbos:
        lines.append(row("DBOS `@DBOS.step()` in one workflow", dbos))
    lines.append("")
    ours_med = med([med(t) for t in ours])
    lines.append(
        f"- ours median {ms(ours_med)} ms: target <= 1 ms {'met' if ours_med <= 1e-3 else 'MISSED'}"
    )
    if dbos:
        ratios = [med(o) / med(d) for o, d in zip(ours, dbos, strict=False)]
        p99_ratios = [
            percentile(o, 99) / percentile(d, 99) for o, d in zip(ours, dbos, strict=False)
        ]
        lines.append(
            f"- ratio ours/DBOS of the medians, per round: median {med(ratios):.3f}"
            f" (rounds: {', '.join(f'{x:.3f}' for x in ratios)}); of the p99s"
            f" {med(p99_ratios):.3f}; target <= 0.25 {'met' if med(ratios) <= 0.25 else 'MISSED'}"
        )
    elif not args.no_dbos:
        lines.append(f"- DBOS: {dbos_error or 'not measured'}")
    return [*lines, ""]


def state_at_table(args: argparse.Namespace, sa: dict[str, Any]) -> list[str]:
    read = (
        "`store.read_stream_data` (type, data JSON, recorded_at)"
        if sa["lean"]
        else "`store.read_stream` (rows -> RecordedEvent)"
    )
    decode = "`ev.decode_stored` per row" if sa["lean"] else "`run_events` (via dicts)"
    n = sa["count"]
    return [
        f"### 3. `state_at(run, {STATE_AT_STEP})` on a {BIG_RUN_STEPS}-step run "
        f"({n} events; {args.state_repeats} repeats; median (min-max))",
        "",
        "| part | ms |",
        "|---|---|",
        f"| **end to end: `Runs(store).state_at(run_id, {STATE_AT_STEP})`** | "
        f"{spread(sa['e2e'])} |",
        f"| `Runs.events` (read + decode all {n} events) | {spread(sa['events'])} |",
        f"| - read alone: {read}, all events | {spread(sa['read'])} |",
        f"| - decode alone: {decode} | {spread(sa['decode'])} |",
        f"| **pure fold: `state_at(events, {STATE_AT_STEP})`** | {spread(sa['state_at'])} |",
        f"| (reference) `fold` of all {n} events | {spread(sa['fold_all'])} |",
        f"| (reference) `store.read_stream` of all events (RecordedEvents) | "
        f"{spread(sa['read_recorded'])} |",
        f"| (setup) building the run, {BUILD_BATCH_STEPS} steps per append | {ms(sa['build'])} |",
        "",
        f"- target <= 100 ms end to end: {'met' if med(sa['e2e']) <= 0.1 else 'MISSED'}",
        "",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    parser.add_argument("--tasks", type=int, help="tasks (and DBOS steps) per round, >= 500")
    parser.add_argument("--rounds", type=int, help="rounds of ours and DBOS, interleaved")
    parser.add_argument("--no-dbos", action="store_true", help="skip DBOS")
    parser.add_argument(
        "--only",
        default="tasks,state_at,profile",
        help="comma-separated parts to run: tasks (1-2), state_at (3), profile (4); default all",
    )
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile tables")
    parser.add_argument("--dbos-child", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.tasks = args.tasks or (500 if args.quick else 1000)
    if args.dbos_child:
        return args
    if args.tasks < 500:
        parser.error("--tasks must be at least 500")
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = args.only - {"tasks", "state_at", "profile"}
    if unknown:
        parser.error(f"unknown part(s) for --only: {', '.join(sorted(unknown))}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.state_repeats = 3 if args.quick else 7
    args.long_tasks = 200 if args.quick else 500
    args.profile_n = 200 if args.quick else 500
    return args


def main() -> None:
    args = parse_args()
    if args.dbos_child:
        dbos_child(args.dbos_child, args.tasks, WARMUP_TASKS)
        return
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    suffix = uuid.uuid4().hex[:8]
    ours_db = f"papayya_bench_ckpt_{suffix}"
    dbos_db = f"papayya_bench_ckpt_dbos_{suffix}"  # DBOS creates it itself
    asyncio.run(admin(admin_dsn, f'CREATE DATABASE "{ours_db}"'))
    try:
        report = measure(
            admin_dsn, with_database(admin_dsn, ours_db), with_database(admin_dsn, dbos_db), args
        )
    finally:
        asyncio.run(
            admin(
                admin_dsn,
                f'DROP DATABASE IF EXISTS "{ours_db}" WITH (FORCE)',
                f'DROP DATABASE IF EXISTS "{dbos_db}" WITH (FORCE)',
            )
        )
    print(report)


if __name__ == "__main__":
    main()
