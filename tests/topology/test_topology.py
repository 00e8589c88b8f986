"""Many machines (issue 19): a cluster of separate node processes (2 API nodes behind
HAProxy, 2 schedulers, 1 projector, 3 workers) on one Postgres and one Redis, under a steady
load of API runs, signed webhook calls and cron schedules, loses whole nodes: an API node and
a worker (SIGKILL), the active scheduler (its standby takes over within the lease) and the
projector (restarted). Each kill is checked to have landed mid-work. Then: every run ended
(completed), no schedule fire was lost or doubled, no webhook delivery or API request made
two runs or none, no finished step ran again, every callback was delivered, and the
projections equal their rebuild (``papayya projections rebuild``).

``make topology`` runs this module alone; its nodes' logs are kept in
/tmp/papayya-topology-last (or $PAPAYYA_TOPOLOGY_LOGS).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from eventstore.postgres import PostgresEventStore
from eventstore.types import Cursor, Filters
from fakellm import FakeConfig
from fakellm.testing import FakeServer, running_fake
from papayya.domain import events as ev
from papayya.runs import Runs
from papayya.triggers.scheduler import fire_run_id
from tests.support.serving import Receiver, receiver
from tests.support.topology import (
    LEASE_SECONDS,
    WORKER_CONCURRENCY,
    Cluster,
    Node,
    running_cluster,
)
from tests.support.webhooks import signed
from web.routes.webhooks import delivery_run_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

AGENT = '''
import os, time
from openai import OpenAI
from papayya import agent, current_run, tool

@tool
def note(run: str, i: int) -> dict:
    """A side effect the test counts."""
    with open(os.environ["SIDE_EFFECTS"], "a") as f:
        f.write(f"{run}:{i}\\n")
    return {"i": i}

@agent
def topo(task):
    client = OpenAI(max_retries=10)
    run = current_run().id
    for i in range(2):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"{run} step {i}"}])
        note(run=run, i=i)
        current_run().task(f"nap{i}", lambda: time.sleep(0.1) or i)
    return {"steps": 2}
'''
STEPS = 2
RUNS_PER_SECOND = 0.6
WEBHOOKS_PER_SECOND = 0.3
WAVE_SCHEDULES = 3  # schedules made due at once to catch the active scheduler mid-claim
WAVE_FIRES = 3  # due fires of each
RETRY_SECONDS = 60.0
DRAIN_SECONDS = 150.0
TERMINAL = ("completed", "failed", "cancelled", "budget_exceeded")


class Load:
    """Runs through ``POST /v1/agents/{slug}/runs`` (half with a callback) and signed webhook
    calls, at a steady rate, each retried until answered with the same idempotency key or
    webhook-id, as a client that lost an answer to a dead node would."""

    def __init__(self, cluster: Cluster, hook: dict[str, Any], callbacks: Receiver) -> None:
        self.cluster = cluster
        self.hook = hook
        self.callbacks = callbacks
        self.runs: dict[str, str] = {}  # idempotency key -> run id
        self.deliveries: dict[str, str] = {}  # webhook-id -> run id
        self.with_callback: set[str] = set()
        self.retried = 0
        self.stopping = asyncio.Event()

    async def _answered(self, send: Callable[[], Awaitable[tuple[int, Any]]]) -> Any:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                status, body = await send()
                if status < 300:
                    return body
                assert status >= 500, (status, body)  # a refusal is a bug of the test
            assert time.monotonic() < deadline, "the cluster did not answer for a minute"
            self.retried += 1
            await asyncio.sleep(0.3)

    async def _every(self, per_second: float, once: Callable[[int], Awaitable[None]]) -> None:
        for n in itertools.count():
            if self.stopping.is_set():
                return
            await once(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 1 / per_second)

    async def api_runs(self, http: aiohttp.ClientSession) -> None:
        async def once(n: int) -> None:
            key = f"topology-{n}"
            body: dict[str, Any] = {"input": {"n": n}, "idempotency_key": key}
            if n % 2:
                body["callback_url"] = f"{self.callbacks.url}/done"

            async def send() -> tuple[int, Any]:
                async with http.post(f"{self.cluster.url}/v1/agents/topo/runs", json=body,
                                     headers=self.cluster.headers) as r:  # fmt: skip
                    return r.status, await r.json(content_type=None)

            run = await self._answered(send)
            self.runs[key] = run["id"]
            if n % 2:
                self.with_callback.add(run["id"])

        await self._every(RUNS_PER_SECOND, once)

    async def webhook_calls(self, http: aiohttp.ClientSession) -> None:
        async def once(n: int) -> None:
            message = f"msg_topology_{n}_{uuid.uuid4().hex[:6]}"
            payload = json.dumps({"delivery": n}).encode()

            async def send() -> tuple[int, Any]:
                headers = signed(self.hook["secret"], payload, message)
                headers["Content-Type"] = "application/json"
                async with http.post(self.hook["trigger_url"], data=payload,
                                     headers=headers) as r:  # fmt: skip
                    return r.status, await r.json(content_type=None)

            self.deliveries[message] = (await self._answered(send))["run_id"]

        await self._every(WEBHOOKS_PER_SECOND, once)


async def register(cluster: Cluster, http: aiohttp.ClientSession) -> dict[str, Any]:
    """The agent (a process deployment of a module on this machine) and its webhook."""
    module = cluster.work / "topo_agent.py"
    module.write_text(AGENT)
    await cluster.call(http, "POST", "/v1/agents", {"name": "topo", "slug": "topo", "config": {}})
    await cluster.call(http, "POST", "/v1/agents/topo/deployments", {"entrypoint": str(module)})
    hook = await cluster.call(http, "POST", "/v1/agents/topo/webhooks",
                              {"name": "load", "rate_limit_per_minute": 100_000})  # fmt: skip
    hook["trigger_url"] = f"{cluster.url}/v1/webhooks/{hook['id']}/trigger"
    return dict(hook)


async def schedule(cluster: Cluster, http: aiohttp.ClientSession) -> str:
    """A schedule firing every minute (catch-up all, overlapping runs allowed)."""
    made = await cluster.call(http, "POST", "/v1/agents/topo/schedules", {
        "cron_expression": "* * * * *", "timezone": "UTC", "input": {"scheduled": True},
        "overlap_policy": "allow", "catchup_policy": "all",
    })  # fmt: skip
    return str(made["id"])


async def make_due(cluster: Cluster, schedules: list[str], minutes: int) -> None:
    """Move the schedules' next fire ``minutes`` back, as after schedulers were down: a
    claim of one then starts that many runs before it commits."""
    await cluster.pool.execute(
        "UPDATE schedules SET next_fire_at = next_fire_at - make_interval(mins => $2)"
        " WHERE schedule_id = ANY($1)",
        schedules, minutes,
    )  # fmt: skip


async def poll(what: str, check: Callable[[], Awaitable[Any]], timeout: float,
               every: float = 0.01) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(every)


class Kills:
    """Each kill waits for its node to be in the middle of something, and proves it was."""

    def __init__(self, cluster: Cluster, store: PostgresEventStore,
                 http: aiohttp.ClientSession) -> None:  # fmt: skip
        self.cluster = cluster
        self.store = store
        self.http = http
        self.report: list[str] = []
        self.leased: list[str] = []  # runs whose attempt died with the killed worker
        self.orphans: set[str] = set()  # reservations of model calls that died with a gateway
        self.schedules: list[str] = []

    async def api_node(self) -> None:
        """An API node with requests in flight through HAProxy. The proof that it died
        mid-work: HAProxy counts responses it never sent (eresp) or cut short (srv_abrt), or
        a model call's budget reservation at its gateway is left open (checked again at the
        end, when every run has completed: no live gateway left it so). A kill that caught
        neither does not count: the node is started again and the next one is tried."""

        def lost(name: str) -> int:
            stats = self.cluster.server_stats()[name]
            return int(stats["eresp"]) + int(stats["srv_abrt"])

        def busy() -> str | None:
            scur, name = max((int(s["scur"]), n) for n, s in self.cluster.server_stats().items())
            return name if scur else None

        for _ in range(3):
            name = await poll("an API node busy", lambda: _sync(busy), 30)
            before = lost(name)
            node = self.cluster.nodes[name]
            killed_at = datetime.now(UTC)
            await node.kill()
            await asyncio.sleep(3)  # the other node's calls in flight settle meanwhile
            cut = lost(name) - before
            self.orphans = await open_reservations(self.cluster, killed_at)
            if cut or self.orphans:
                self.report.append(f"{name}: SIGKILL with {cut} request(s) cut at HAProxy, "
                                   f"{len(self.orphans)} model call(s) at its gateway")  # fmt: skip
                return
            node.start()
            await poll(f"{name} back", lambda n=name: _sync(lambda: self._up(n)), 60, 0.2)
        raise AssertionError("no API node was ever killed with a request in flight")

    def _up(self, name: str) -> bool:
        return self.cluster.server_stats()[name]["status"] == "UP"

    async def worker(self) -> None:
        """A worker holding the lease of a running attempt whose agent process is alive."""

        async def busy() -> tuple[Node, list[str]] | None:
            for node in self.cluster.of("worker"):
                if node.alive and len(node.agents()) >= 2:  # its fork server and an agent
                    leased = await self.cluster.worker_leases(node)
                    if leased:
                        return node, leased
            return None

        node, leased = await poll("a worker running an agent", busy, 30, every=0.05)
        await node.kill()
        self.leased = leased
        self.report.append(f"{node.name}: SIGKILL with runs {leased} in flight")

    async def scheduler(self) -> None:
        """The scheduler that leads the dispatcher and callbacks, caught holding the claim of a
        due schedule (runs queued, fires not committed); its standby must lead within the
        lease, and the fires are redone by it, finding the runs already queued."""
        active = await self.cluster.leader("dispatcher")
        assert active is not None and await self.cluster.leader("callbacks") is active
        for wave in range(1, 6):
            made = [await schedule(self.cluster, self.http) for _ in range(WAVE_SCHEDULES)]
            self.schedules += made
            await make_due(self.cluster, made, WAVE_FIRES)
            with contextlib.suppress(AssertionError):
                await poll(
                    f"{active.name} claiming (wave {wave})", lambda: _has(self.cluster, active), 15
                )
                break
        else:
            raise AssertionError(f"{active.name} never claimed a due schedule")
        await active.kill()
        killed = time.monotonic()
        for role in ("dispatcher", "callbacks"):
            left = LEASE_SECONDS - (time.monotonic() - killed)
            standby = await poll(
                f"a standby leading {role}", lambda r=role: self.cluster.leader(r), left, 0.1
            )
            assert standby is not active
        self.report.append(f"{active.name}: SIGKILL mid-claim (wave {wave}); {standby.name} "
                           f"leads in {time.monotonic() - killed:.1f} s")  # fmt: skip
        # Their fires are final once recorded: no more of them load the cluster.
        await pause(self.cluster, self.http, self.schedules)

    async def projector(self) -> None:
        """The projector with run events committed that it had not projected yet (its
        checkpoint, frozen by the kill, is before them); then it is started again."""
        node = self.cluster.nodes["projector"]
        filters = Filters.of(categories=["run"])
        for _ in range(5):
            pending = await poll("run events not projected yet",
                                 lambda: self._pending(filters), 30, every=0.002)  # fmt: skip
            await node.kill()
            frozen = await self._checkpoint()
            node.start()
            await poll("the projector back", lambda: self._leads("runs", node), 60, 0.2)
            if pending > frozen:
                self.report.append(f"projector: SIGKILL at {frozen}, events up to {pending} "
                                   "not projected; restarted")  # fmt: skip
                return
            # It got there between the look and the kill: that kill did not count.
        raise AssertionError("the projector was never caught behind")

    async def _leads(self, projector: str, node: Node) -> bool:
        return await self.cluster.leader(projector) is node

    async def _checkpoint(self) -> Cursor:
        stored = await self.cluster.pool.fetchval(
            "SELECT cursor FROM projection_checkpoints WHERE name = 'runs'"
        )
        return Cursor.parse(stored)

    async def _pending(self, filters: Filters) -> Cursor | None:
        """The cursor of the newest run event visible and not yet projected, if any."""
        checkpoint = await self._checkpoint()
        page = await self.store.read_all(after=checkpoint, limit=50, filters=filters)
        return page.events[-1].cursor if page.events else None


async def open_reservations(cluster: Cluster, before: datetime) -> set[str]:
    """Budget reservations made before ``before`` and not settled: model calls in flight
    at a gateway that died (a live one settles each call as it ends)."""
    rows = await cluster.pool.fetch(
        "SELECT r.data->>'reservation_id' AS id FROM events r"
        " WHERE r.event_type = 'BudgetReserved' AND r.recorded_at < $1 AND NOT EXISTS ("
        " SELECT 1 FROM events s WHERE s.stream_id = r.stream_id AND s.event_type = 'BudgetSettled'"
        " AND s.data->>'reservation_id' = r.data->>'reservation_id')",
        before,
    )  # fmt: skip
    return {r["id"] for r in rows}


async def _sync(check: Callable[[], Any]) -> Any:
    return check()


async def _has(cluster: Cluster, node: Node) -> bool:
    return node.name in await cluster.claiming()


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    # Slow enough that model calls are in flight when an API node dies.
    async with running_fake(FakeConfig(keep_requests=100_000)) as server:
        server.configure({"latency": {"first_byte": 0.4}})
        yield server


async def test_a_cluster_loses_whole_nodes_and_no_work(dsn: str, fake: FakeServer) -> None:
    async with (
        running_cluster(dsn, fake.url) as cluster,
        receiver() as callbacks,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        store = await PostgresEventStore.connect(dsn, min_size=1, max_size=4)
        try:
            hook = await register(cluster, http)
            steady = [await schedule(cluster, http) for _ in range(2)]
            await make_due(cluster, steady, 2)
            load = Load(cluster, hook, callbacks)
            loaders = [asyncio.create_task(load.api_runs(http)),
                       asyncio.create_task(load.webhook_calls(http))]  # fmt: skip
            kills = Kills(cluster, store, http)
            sessions = asyncio.create_task(peak_sessions(cluster, kills))
            loaders.append(sessions)
            try:
                for kill in (kills.api_node, kills.worker, kills.scheduler, kills.projector):
                    await asyncio.sleep(6)
                    await kill()
                await asyncio.sleep(6)
                load.stopping.set()
                sessions.cancel()
                await asyncio.gather(*loaders[:2])
            finally:
                for task in loaders:
                    task.cancel()
            schedules = steady + kills.schedules
            await pause(cluster, http, schedules)
            await check(cluster, store, load, kills, schedules, callbacks)
        finally:
            await store.close()


async def peak_sessions(cluster: Cluster, kills: Kills) -> None:
    """How many Postgres sessions the cluster holds at most (for the report: a cluster
    needs max_connections to match)."""
    peak = 0
    try:
        while True:
            now = await cluster.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )
            peak = max(peak, now)
            await asyncio.sleep(0.5)
    finally:
        kills.report.append(f"at most {peak} Postgres sessions")


async def pause(cluster: Cluster, http: aiohttp.ClientSession, schedules: list[str]) -> None:
    """Once every due fire is recorded (and away from a minute's turn), pause the schedules:
    their fires are then final."""
    now = datetime.now(UTC)
    if now.second >= 55:
        await asyncio.sleep(61 - now.second)

    async def all_fired() -> bool:
        due = await cluster.pool.fetchval(
            "SELECT count(*) FROM schedules"
            " WHERE schedule_id = ANY($1) AND enabled AND next_fire_at <= now()",
            schedules,
        )  # fmt: skip
        return bool(due == 0)

    await poll("every due fire recorded", all_fired, 30, every=0.2)
    for schedule_id in schedules:  # (pausing a paused one changes nothing)
        await cluster.call(http, "PATCH", f"/v1/schedules/{schedule_id}", {"enabled": False})


async def fires_of(cluster: Cluster, schedules: list[str]) -> list[Any]:
    return list(await cluster.pool.fetch(
        "SELECT f.schedule_id, f.fire_at, f.status, f.run_id, s.next_fire_at"
        "  FROM schedule_fires f JOIN schedules s USING (schedule_id)"
        " WHERE f.schedule_id = ANY($1) ORDER BY f.schedule_id, f.fire_at",
        schedules,
    ))  # fmt: skip


async def check(cluster: Cluster, store: PostgresEventStore, load: Load, kills: Kills,
                schedules: list[str], callbacks: Receiver) -> None:  # fmt: skip
    runs = Runs(store)
    print("\n".join(kills.report))

    # No schedule fire lost or doubled: each schedule's fires are every minute from its
    # first up to its next fire, each started one run (the fire's own id), and no other run
    # of the schedule exists.
    fires = await fires_of(cluster, schedules)
    by_schedule: dict[str, list[Any]] = {}
    for row in fires:
        by_schedule.setdefault(row["schedule_id"], []).append(row)
    assert set(by_schedule) == set(schedules), "a schedule never fired"
    for schedule_id, rows in by_schedule.items():
        times = [r["fire_at"] for r in rows]
        minutes = [times[0] + timedelta(minutes=i) for i in range(len(times))]
        assert times == minutes, f"{schedule_id}: fires missing between {times}"
        assert rows[0]["next_fire_at"] == times[-1] + timedelta(minutes=1), schedule_id
        assert [r["status"] for r in rows] == ["started"] * len(rows), rows
        assert [r["run_id"] for r in rows] == [fire_run_id(schedule_id, t) for t in times]
    queued = await cluster.pool.fetch(
        "SELECT data->'metadata'->>'papayya.schedule_id' AS schedule_id,"
        "       data->'metadata'->>'papayya.fire_at' AS fire_at, stream_id FROM events"
        " WHERE event_type = 'RunQueued' AND data->>'trigger' = 'schedule'"
    )
    per_fire = Counter((r["schedule_id"], r["fire_at"]) for r in queued)
    assert len(queued) == len(fires) and set(per_fire.values()) == {1}, per_fire
    scheduled = [r["run_id"] for r in fires]

    # No API request or webhook delivery lost or doubled: one run per idempotency key and
    # per webhook-id, the delivery's own id, and no other run of theirs.
    assert all(run == delivery_run_id(load.hook["id"], m) for m, run in load.deliveries.items())
    triggers = Counter(
        r["trigger"] for r in await cluster.pool.fetch(
            "SELECT coalesce(data->>'trigger', 'api') AS trigger FROM events"
            " WHERE event_type = 'RunQueued'")
    )  # fmt: skip
    assert triggers == {"api": len(load.runs), "webhook": len(load.deliveries),
                        "schedule": len(fires)}, triggers  # fmt: skip
    assert len(set(load.runs.values())) == len(load.runs)
    # Every run ended, and completed.
    everything = [*load.runs.values(), *load.deliveries.values(), *scheduled]
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        states = [await runs.load(r) for r in everything]
        pending = [s for s in states if s.status not in TERMINAL]
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert not pending, [(s.run_id, s.status) for s in pending[:5]]
    failed = [(s.run_id, s.status, s.error_code, s.error_message) for s in states
              if s.status != "completed"]  # fmt: skip
    assert not failed, failed[:5]
    orphans = await open_reservations(cluster, datetime.now(UTC))
    assert kills.orphans <= orphans, "a model call counted as lost with its gateway was settled"
    print(
        f"runs: {dict(triggers)}; {load.retried} requests repeated by their clients; "
        f"{len(orphans)} model calls died with their gateway (reservations left open)"
    )
    for run_id in kills.leased:  # the dead worker's runs were taken over and resumed
        events = await runs.events(run_id)
        assert any(isinstance(e, ev.AttemptLost) for e in events), run_id

    # No finished step ran again: each model call forwarded live once, each tool and
    # checkpoint recorded once; a tool's side effect repeats only for an agent that died
    # with the worker while it ran.
    for state in states:
        events = await runs.events(state.run_id)
        live = [e.fingerprint for e in events if isinstance(e, ev.LlmCallRecorded)
                and not e.replayed and e.error is None]  # fmt: skip
        tools = [e.fingerprint for e in events if isinstance(e, ev.ToolCallRecorded)]
        labels = [e.label for e in events if isinstance(e, ev.CheckpointSaved)]
        for what in (live, tools, labels):
            assert len(what) == len(set(what)) == STEPS, (state.run_id, what)
    effects = Counter((cluster.work / "side_effects.txt").read_text().splitlines())
    assert set(effects) == {f"{r}:{i}" for r in everything for i in range(STEPS)}
    assert sum(n - 1 for n in effects.values()) <= WORKER_CONCURRENCY

    # Every callback owed was delivered (the callbacks' leader was among the dead).
    async def delivered() -> bool:
        got = {json.loads(body)["id"] for _, _, body in callbacks.received}
        return load.with_callback <= got

    await poll("every callback delivered", delivered, 30, every=0.2)
    await projections_equal_their_rebuild(cluster)


async def projections_equal_their_rebuild(cluster: Cluster) -> None:
    """Quiesce the cluster, let the (restarted) projector catch up, stop it, and compare its
    tables with a rebuild from the first event by ``papayya projections rebuild``."""
    for node in cluster.nodes.values():
        if node.name != "projector":
            await node.stop()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "server.cli", "projections", *args]
        return subprocess.run(command, env=cluster.env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    async def caught_up() -> bool:
        status = await asyncio.to_thread(cli, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        return all(" lag 0.000s" in line for line in status.stdout.splitlines())

    await poll("the projector caught up", caught_up, 60, every=0.5)
    await cluster.nodes["projector"].stop()
    before = await tables(cluster)
    rebuilt = await asyncio.to_thread(cli, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = await tables(cluster)
    assert before["runs"], "nothing was projected"
    for table in before:
        assert before[table] == after[table], table


async def tables(cluster: Cluster) -> dict[str, list[str]]:
    found = {}
    for table in ("runs", "steps", "costs"):
        rows = await cluster.pool.fetch(f"SELECT * FROM {table}")
        found[table] = sorted(repr(sorted(dict(r).items())) for r in rows)
    return found
