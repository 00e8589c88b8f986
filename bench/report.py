"""Run every benchmark in bench/ and write bench/REPORT.md (``make bench``).

Run from the repo root: ``.venv/bin/python bench/report.py [--quick] [--only a,b] [--skip c]``.
Each benchmark runs as its own process, one after another (they would disturb each other's
figures otherwise), and prints Markdown tables that put each figure beside its baseline
measured in the same run: raw asyncpg, DBOS, arq, a direct call to the provider. The report
holds those tables as printed, what each compares against, and the machine they ran on: CPU,
memory, load before and after, Python, PostgreSQL and Redis versions, and the date.

A benchmark that needs what this machine lacks (``deploy.py`` needs Docker and the registry
and S3 of ``make services``) is listed as skipped, with the reason. One that fails is listed
with the end of its output, and the exit status is 1 once the report is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
SERVICES_ENV = ROOT / ".papayya" / "services.env"


@dataclass(frozen=True)
class Bench:
    name: str
    measures: str
    baseline: str
    quick: tuple[str, ...] = ()
    needs_docker: bool = False


# In the order they run: cheapest first, so a broken setup shows early.
BENCHES = (
    Bench(
        "eventstore",
        "appends, catch-up reads, commit → subscriber latency",
        "raw asyncpg INSERT / keyset SELECT on the same server",
        ("--quick",),
    ),
    Bench(
        "checkpoint",
        "`run.task` overhead, `state_at` on a long run",
        "DBOS `@DBOS.step()` on the same server",
        ("--quick",),
    ),
    Bench(
        "sdk_http",
        "`run.task` over the durable HTTP API",
        "the SDK's direct mode",
        ("--tasks", "500", "--rounds", "1", "--long", "500"),
    ),
    Bench(
        "projections", "commit → read-model lag, rebuild time", "the writer's commit", ("--quick",)
    ),
    Bench(
        "api", "SSE fan-out to many subscribers of one run", "targets (p99 ≤ 200 ms)", ("--quick",)
    ),
    Bench(
        "gateway",
        "what metering adds to a model call, throughput",
        "the same call direct to the (fake) provider",
        ("--quick",),
    ),
    Bench(
        "agent_process",
        "CPU of one no-op run's agent process (process runtime), against a stub API",
        "fork + exit of the same interpreter",
        ("--runs", "50"),
    ),
    Bench(
        "e2e",
        "API trigger → completed run, CPU per run by process, recovery after a worker kill",
        "DBOS's durable queue on the same Postgres; arq (a plain Redis job queue) on the same "
        "Redis",
        ("--runs", "30", "--concurrency", "4"),
    ),
    Bench(
        "deploy",
        "image build, container start, queued → agent running",
        "targets",
        ("--quick", "--runs", "3"),
        needs_docker=True,
    ),
)


@dataclass
class Outcome:
    bench: Bench
    status: str  # "ok", "failed (exit N)", "skipped: why"
    seconds: float = 0.0
    output: str = ""


def read_first(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


async def server_versions(dsn: str, redis_url: str) -> tuple[str, str]:
    postgres = redis = "unreachable"
    try:
        import asyncpg

        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            postgres = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    except Exception as exc:
        postgres = f"unreachable ({type(exc).__name__})"
    try:
        import redis.asyncio as aioredis

        client = aioredis.from_url(redis_url)
        try:
            info = await client.info("server")
            redis = str(info.get("redis_version", "unknown"))
        finally:
            await client.aclose()
    except Exception as exc:
        redis = f"unreachable ({type(exc).__name__})"
    return postgres, redis


def machine(dsn: str, redis_url: str) -> list[str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = read_first("/proc/cpuinfo", "model name") or platform.processor() or "unknown"
    memory = read_first("/proc/meminfo", "MemTotal")
    memory_text = f"{int(memory.split()[0]) / 2**20:.1f} GiB" if memory else "unknown"
    postgres, redis = asyncio.run(server_versions(dsn, redis_url))
    return [
        f"| CPUs | {cpus} × {model} ({platform.machine()}) |",
        f"| memory | {memory_text} |",
        f"| OS | {platform.system()} {platform.release()} |",
        f"| Python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| PostgreSQL | {postgres} ({_where(dsn)}) |",
        f"| Redis | {redis} ({_where(redis_url)}) |",
    ]


def _where(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.hostname else url


def docker_missing() -> str | None:
    """Why the Docker benchmark cannot run here, or ``None``."""
    if not SERVICES_ENV.exists():
        return f"no {SERVICES_ENV.relative_to(ROOT)} (run `make services`)"
    if shutil.which("docker") is None:
        return "no docker command (run `make services`)"
    try:
        subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return "the Docker engine does not answer (run `make services`)"
    return None


def run(bench: Bench, quick: bool, timeout: float | None) -> Outcome:
    command = [sys.executable, str(BENCH / f"{bench.name}.py"), *(bench.quick if quick else ())]
    print(f"== {bench.name}: {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    try:
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return Outcome(bench, f"failed (over {timeout:.0f} s)", time.monotonic() - began, out)
    seconds = time.monotonic() - began
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        return Outcome(bench, f"failed (exit {proc.returncode})", seconds, tail)
    return Outcome(bench, "ok", seconds, proc.stdout.strip())


def report(outcomes: list[Outcome], header: list[str], quick: bool, began: datetime) -> str:
    lines = [
        "# Papayya benchmarks",
        "",
        f"Generated by `make bench` (`bench/report.py{' --quick' if quick else ''}`) on "
        f"{began:%Y-%m-%d %H:%M} UTC"
        + (" — **quick mode: smoke-test sizes, not figures to quote**." if quick else "."),
        "Each benchmark ran alone, one after another, and measured its baseline in the same",
        "run on the same machine; its own tables follow as it printed them.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *header,
        "",
        "## Summary",
        "",
        "| benchmark | measures | baseline (same run) | result | time |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| [`bench/{o.bench.name}.py`](#{o.bench.name}) | {o.bench.measures} | "
            f"{o.bench.baseline} | {o.status} | {o.seconds:.0f} s |"
        )
    for o in outcomes:
        lines += ["", f"## {o.bench.name}", ""]
        if o.status == "ok":  # its headings go one level down, under this one
            lines += [
                f"#{line}" if line.startswith("#") else line
                for line in (o.output or "(it printed nothing)").splitlines()
            ]
        elif o.status.startswith("skipped"):
            lines.append(f"Skipped: {o.status.removeprefix('skipped: ')}.")
        else:
            lines += [f"**{o.status}**; the end of its output:", "", "```", o.output, "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's smallest sizes")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--timeout", type=float, help="seconds per benchmark")
    parser.add_argument("--output", type=Path, default=BENCH / "REPORT.md")
    args = parser.parse_args()
    known = {b.name for b in BENCHES}
    on_disk = {p.stem for p in BENCH.glob("*.py")} - {"report"}
    if on_disk - known:  # a new benchmark must say what it measures against
        sys.exit(f"add {', '.join(sorted(on_disk - known))} to BENCHES in bench/report.py")
    only = set(args.only.split(",")) if args.only else known
    skip = set(filter(None, args.skip.split(",")))
    if (only | skip) - known:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted((only | skip) - known))}")
    dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    redis_url = os.environ.get("PAPAYYA_BENCH_REDIS_URL", DEFAULT_REDIS)
    began = datetime.now(UTC)
    load_before = load()
    header = machine(dsn, redis_url)
    outcomes = []
    for bench in BENCHES:
        if bench.name not in only or bench.name in skip:
            continue
        why = docker_missing() if bench.needs_docker else None
        if why is not None:
            outcomes.append(Outcome(bench, f"skipped: {why}"))
            continue
        outcomes.append(run(bench, args.quick, args.timeout))
    header.append(f"| load average (1/5/15 min) | before {load_before}; after {load()} |")
    header.append(f"| duration | {(datetime.now(UTC) - began).total_seconds():.0f} s |")
    args.output.write_text(report(outcomes, header, args.quick, began))
    print(f"wrote {args.output}")
    for o in outcomes:
        print(f"  {o.bench.name}: {o.status} ({o.seconds:.0f} s)")
    if any(o.status.startswith("failed") for o in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
