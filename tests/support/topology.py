"""A Papayya cluster on one machine, each node a process of its own as on separate hosts
(tests/topology, ``make topology``): API nodes behind HAProxy, schedulers, a projector and
workers, sharing one Postgres database and one Redis queue.

Each node gets its own data directory, log file and environment, and is started with the
same command line an operator would use (``papayya api``, ``scheduler``, ``projector``,
``worker``), every backend URL passed explicitly. Which node holds what is read from the
outside, as an operator would: leaderships and schedule claims from ``pg_locks`` (mapped to
a node by the client port of its Postgres sessions), requests in flight from HAProxy's stats
socket, running attempts from ``run_leases``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import psutil

from tests.support.cloud import REDIS_URL, ROOT, agent_workspace, free_port
from tests.support.gateway import PROVIDER_KEY
from workers.queue import MARK_PREFIX, connect

# The advisory lock of a projector's leader (sql/projections.sql, try_lead).
LEAD_LOCK_CLASS: Final = 7292
LEASE_SECONDS: Final = 8.0
HEARTBEAT_SECONDS: Final = 2.0
WORKER_CONCURRENCY: Final = 3
START_SECONDS: Final = 90.0

LEADER_OF = """
SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1
   AND l.objid = hashtext($2)::oid AND l.objsubid = 2 AND a.datname = current_database()
"""
# A scheduler's claim of a due schedule: a transaction holding FOR UPDATE on its row.
CLAIMING = """
SELECT a.client_port FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
  JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE c.relname = 'schedules' AND l.mode = 'RowShareLock' AND l.granted
   AND a.datname = current_database()
"""


def haproxy() -> str:
    """HAProxy's binary, installed from Debian's packages the way `make services` does."""
    found = shutil.which("haproxy")
    if found is None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "services.sh"), "install", "haproxy:haproxy"],
            check=True, timeout=600,
        )  # fmt: skip
        found = shutil.which("haproxy")
    assert found is not None, "HAProxy did not install: run `make services`"
    return found


HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-request 10s
    # A request that cannot reach a server goes to another. So may one a dying server had
    # received on a kept-alive connection: each kind of request must bear a repeat (runs and
    # runtime calls carry idempotency keys; a model call in flight may run twice).
    option redispatch
    retries 3

frontend papayya
    bind 127.0.0.1:{port}
    default_backend api

backend api
    balance roundrobin
    option httpchk GET /healthz
    default-server check inter 500ms fall 2 rise 2
{servers}
"""


@dataclass
class Node:
    """One ``papayya`` process with its own data directory, environment and log."""

    name: str
    args: list[str]
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes] | None = None
    port: int | None = None

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "node.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server.cli", *self.args],
                env=self.env | {"PAPAYYA_DATA_DIR": str(self.home / "data")},
                cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        path = self.home / "node.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def ports(self) -> set[int]:
        """The local ports of this node's TCP connections (its Postgres sessions among them)."""
        with contextlib.suppress(psutil.Error):
            return {c.laddr.port for c in psutil.Process(self.pid).net_connections("tcp")}
        return set()

    def agents(self) -> list[int]:
        """Processes below this node (a worker's fork server and agents)."""
        with contextlib.suppress(psutil.Error):
            return [p.pid for p in psutil.Process(self.pid).children(recursive=True)]
        return []

    async def kill(self) -> None:
        """SIGKILL, as a machine that loses power: nothing is drained or closed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait)

    async def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 40)
            except subprocess.TimeoutExpired:
                await self.kill()


@dataclass
class Cluster:
    """The nodes, the balancer in front of the API nodes, and handles on the shared backends."""

    work: Path
    dsn: str
    key: str
    url: str
    env: dict[str, str]
    queue_name: str
    stats_socket: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    balancer: subprocess.Popen[bytes] | None = None
    db: asyncpg.Pool | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.db is not None
        return self.db

    def add(self, name: str, *args: str, port: int | None = None) -> Node:
        node = Node(name, list(args), dict(self.env), self.work / name, port=port)
        self.nodes[name] = node
        return node

    def of(self, kind: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.args[0] == kind]

    async def node_of(self, ports: set[int]) -> Node | None:
        for node in self.nodes.values():
            if node.alive and ports & node.ports():
                return node
        return None

    async def leader(self, projector: str) -> Node | None:
        """The node whose session holds ``projector``'s leadership lock."""
        rows = await self.pool.fetch(LEADER_OF, LEAD_LOCK_CLASS, projector)
        return await self.node_of({r["client_port"] for r in rows})

    async def claiming(self) -> set[str]:
        """The nodes in the middle of a schedule's claim (its fires not yet committed)."""
        ports = {r["client_port"] for r in await self.pool.fetch(CLAIMING)}
        return {n.name for n in self.nodes.values() if n.alive and ports & n.ports()}

    def server_stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's counters per API node (``show stat``): scur is requests in flight,
        eresp + wredis the ones it lost or moved when the node went away."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        rows = csv.DictReader(io.StringIO(raw.decode().lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "api" and r["svname"] != "BACKEND"}

    async def worker_leases(self, node: Node) -> list[str]:
        """The runs whose running attempt ``node`` holds the lease of."""
        rows = await self.pool.fetch(
            "SELECT run_id FROM run_leases WHERE worker LIKE $1", f"%-{node.pid}-%"
        )
        return [r["run_id"] for r in rows]

    async def call(
        self, http: aiohttp.ClientSession, method: str, path: str, body: Any = None
    ) -> Any:
        async with http.request(method, self.url + path, json=body, headers=self.headers) as r:
            data = await r.json(content_type=None)
            assert r.status < 300, (method, path, r.status, data)
            return data


def cluster_env(dsn: str, redis_url: str, queue: str, key: str, url: str, fake_url: str,
                work: Path) -> dict[str, str]:  # fmt: skip
    """What every node of the cluster is given: an operator's shared environment file."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAPAYYA_", "OPENAI_", "ANTHROPIC_", "AWS_"))
    }
    return env | {
        "PAPAYYA_DATABASE_URL": dsn,
        "PAPAYYA_REDIS_URL": redis_url,
        "PAPAYYA_QUEUE_NAME": queue,
        "PAPAYYA_BOOTSTRAP_API_KEY": key,
        # Agents reach the API through the balancer, as they would across machines.
        "PAPAYYA_CONTROL_URL": url,
        "PAPAYYA_OPENAI_BASE_URL": fake_url + "/v1",
        "PAPAYYA_OPENAI_API_KEY": PROVIDER_KEY,
        "PAPAYYA_LEASE_SECONDS": str(LEASE_SECONDS),
        "PAPAYYA_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "PAPAYYA_GRACE_SECONDS": "2",
        "PAPAYYA_MAX_ATTEMPTS": "10",
        # Scaled down with the lease: a lost attempt waits this long for its calls in flight.
        "PAPAYYA_SETTLE_WAIT_SECONDS": "15",
        "PAPAYYA_CALLBACK_ALLOW_PRIVATE": "1",  # the test's callback receiver is on loopback
        "PAPAYYA_CALLBACK_BACKOFF_SECONDS": "0.5",
        "PAPAYYA_PROCESS_RUNTIME": "all",
        "PAPAYYA_AGENT_ENV": "SIDE_EFFECTS",
        "SIDE_EFFECTS": str(work / "side_effects.txt"),
        "PYTHONPATH": str(ROOT),
    }


async def _until(what: str, check: Any, nodes: list[Node], timeout: float = START_SECONDS) -> Any:
    """Poll ``check()`` until it returns something true; fail with the nodes' logs."""
    async with asyncio.timeout(timeout):
        while True:
            for node in nodes:
                assert node.alive, f"{node.name} exited while waiting for {what}:\n{node.log()}"
            with contextlib.suppress(OSError, aiohttp.ClientError, asyncpg.PostgresError):
                found = await check()
                if found:
                    return found
            await asyncio.sleep(0.2)


async def _healthy(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/healthz") as r:
        return r.status == 200


@contextlib.asynccontextmanager
async def running_cluster(
    dsn: str, fake_url: str, *, apis: int = 2, schedulers: int = 2, workers: int = 3
) -> AsyncIterator[Cluster]:
    """The cluster, started node by node, each waited for: API nodes answering through
    HAProxy, the projector leading, the first scheduler leading the dispatcher and the
    callbacks (the others its standbys, connected), each worker connected to Postgres."""
    binary = haproxy()
    queue = f"papayya:topology:{uuid.uuid4().hex}"
    key = "cpk_topology_" + uuid.uuid4().hex
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    redis = connect(REDIS_URL)
    with agent_workspace() as work:
        env = cluster_env(dsn, REDIS_URL, queue, key, url, fake_url, work)
        cluster = Cluster(work, dsn, key, url, env, queue, work / "haproxy.sock")
        cluster.db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            async with aiohttp.ClientSession() as http:
                ports = [free_port() for _ in range(apis)]
                api_nodes = [cluster.add(f"api-{i}", "api", "--port", str(p), port=p)
                             for i, p in enumerate(ports, 1)]  # fmt: skip
                for node in api_nodes:
                    node.start()
                for node in api_nodes:
                    await _until(node.name, lambda n=node: _healthy(http, f"http://127.0.0.1:{n.port}"),
                                 [node])  # fmt: skip
                servers = "\n".join(f"    server {n.name} 127.0.0.1:{n.port}" for n in api_nodes)
                config = work / "haproxy.cfg"
                config.write_text(HAPROXY_CONFIG.format(
                    socket=cluster.stats_socket, port=port, servers=servers))  # fmt: skip
                with (work / "haproxy.log").open("wb") as log:
                    cluster.balancer = subprocess.Popen(  # noqa: ASYNC220
                        [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
                    )
                await _until("haproxy", lambda: _healthy(http, url), api_nodes)

                projector = cluster.add("projector", "projector")
                projector.start()
                await _until(
                    "the projector", lambda: _leads(cluster, "runs", projector), [projector]
                )
                first, *standbys = [cluster.add(f"scheduler-{i}", "scheduler")
                                    for i in range(1, schedulers + 1)]  # fmt: skip
                first.start()
                for role in ("dispatcher", "callbacks"):
                    await _until(f"{first.name} to lead", lambda r=role: _leads(cluster, r, first),
                                 [first])  # fmt: skip
                for node in standbys:
                    node.start()
                worker_nodes = [
                    cluster.add(f"worker-{i}", "worker", "--runtime", "process",
                                "--concurrency", str(WORKER_CONCURRENCY))
                    for i in range(1, workers + 1)
                ]  # fmt: skip
                for node in worker_nodes:
                    node.start()
                for node in [*standbys, *worker_nodes]:
                    await _until(f"{node.name} to connect", lambda n=node: _connected(cluster, n),
                                 [node])  # fmt: skip
            yield cluster
        finally:
            for node in cluster.nodes.values():
                if node.alive:
                    await node.kill()
            if cluster.balancer is not None:
                cluster.balancer.kill()
                await asyncio.to_thread(cluster.balancer.wait)
            with contextlib.suppress(Exception):
                marks = [k async for k in redis.scan_iter(f"{MARK_PREFIX}{queue}:*", count=1000)]
                await redis.delete(queue, *marks)
            await redis.aclose()
            await cluster.pool.close()
            keep = Path(os.environ.get("PAPAYYA_TOPOLOGY_LOGS", "/tmp/papayya-topology-last"))
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(work, keep, ignore=shutil.ignore_patterns("*.sock", "data"),
                            ignore_dangling_symlinks=True)  # fmt: skip


async def _leads(cluster: Cluster, projector: str, node: Node) -> bool:
    return await cluster.leader(projector) is node


async def _connected(cluster: Cluster, node: Node) -> bool:
    """The node has Postgres sessions open in the cluster's database (a standby scheduler
    polls for the leadership; a worker holds its pool; a Redis consumer shows only once a
    message was delivered to it)."""
    rows = await cluster.pool.fetch(
        "SELECT client_port FROM pg_stat_activity WHERE datname = current_database()"
    )
    return bool({r["client_port"] for r in rows} & node.ports())
