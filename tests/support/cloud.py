"""Cloud execution for tests: the API with its gateway in front of the fake provider, the
scheduler role (dispatcher, sweeper, callbacks) in-process, a queue of the test's own on the
machine's Redis, and workers either in-process or as real ``papayya worker`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import sys
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fakellm import FakeConfig
from fakellm.testing import FakeServer, running_fake
from papayya.config import Config
from papayya.domain.state import RunState
from papayya.processruntime import ProcessRuntimePolicy
from papayya.runs import Runs
from tests.support.gateway import PROVIDER_KEY
from web import keys
from workers.process import ProcessRuntime
from workers.queue import RunQueue, connect
from workers.services import Services, background
from workers.worker import Worker, WorkerConfig

REDIS_URL = os.environ.get("PAPAYYA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).parents[2]
TERMINAL = frozenset(("completed", "failed", "cancelled", "budget_exceeded"))


@contextlib.contextmanager
def agent_workspace() -> Iterator[Path]:
    """A directory for the data dir, agent modules and the side-effects file that agents can
    reach (and write to) when the worker runs as root and starts them as another uid
    (workers/hardening.py): pytest's ``tmp_path`` sits under a directory only its owner may
    enter."""
    path = Path(tempfile.mkdtemp(prefix="papayya-cloud-"))
    try:
        path.chmod(0o1777)  # as /tmp: test agents of any uid leave marker files next to it
        effects = path / "side_effects.txt"
        effects.touch()
        effects.chmod(0o666)  # agents of any uid append to it
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cloud:
    url: str
    key: str
    app: Any
    fake: FakeServer
    services: Services
    config: Config
    tmp: Path
    dsn: str
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)
    runtimes: list[ProcessRuntime] = field(default_factory=list)

    @property
    def runs(self) -> Runs:
        return self.app[keys.RUNS]

    @property
    def queue(self) -> RunQueue:
        return self.services.queue

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=body, headers=self.headers) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def register(self, slug: str, source: str, **config: Any) -> str:
        """An agent ``slug`` whose process deployment is ``source`` (written to a file)."""
        module = self.tmp / f"{slug.replace('-', '_')}.py"
        module.write_text(source)
        status, body = await self.call(
            "POST", "/v1/agents", {"name": slug, "slug": slug, "config": config}
        )
        assert status == 201, body
        status, body = await self.call(
            "POST", f"/v1/agents/{slug}/deployments", {"entrypoint": str(module)}
        )
        assert status == 201, body
        return str(body["id"])

    async def start(self, slug: str, **options: Any) -> str:
        status, body = await self.call("POST", f"/v1/agents/{slug}/runs", options)
        assert status == 201, body
        return str(body["id"])

    async def wait(self, run_id: str, timeout: float = 60, statuses: Any = TERMINAL) -> RunState:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.runs.load(run_id)
            if state.status in statuses:
                return state
            if asyncio.get_running_loop().time() > deadline:
                history = "\n".join(repr(e) for e in await self.runs.events(run_id))
                leases = await self.app[keys.STORE].pool.fetch(
                    "SELECT attempt, worker, expires_at FROM run_leases WHERE run_id = $1", run_id
                )
                raise AssertionError(
                    f"run {run_id} is still {state.status} after {timeout}s; leases "
                    f"{[dict(r) for r in leases]}; its events:\n{history}"
                )
            await asyncio.sleep(0.05)

    def worker_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
        timing = ("HEARTBEAT_SECONDS", "LEASE_SECONDS", "GRACE_SECONDS", "MAX_ATTEMPTS")
        keep = {f"PAPAYYA_{name}" for name in timing}
        env = {k: v for k, v in env.items() if not k.startswith("PAPAYYA_") or k in keep}
        return env | {
            "PAPAYYA_DATABASE_URL": self.dsn,
            "PAPAYYA_REDIS_URL": self.config.redis_url or REDIS_URL,
            "PAPAYYA_QUEUE_NAME": self.config.queue_name,
            "PAPAYYA_CONTROL_URL": self.url,
            "PAPAYYA_DATA_DIR": str(self.tmp / "worker-data"),
            "PAPAYYA_PROCESS_RUNTIME": self.config.process_runtime.value,
            "PAPAYYA_AGENT_ENV": "SIDE_EFFECTS",
            "SIDE_EFFECTS": str(self.tmp / "side_effects.txt"),
            "PYTHONPATH": str(ROOT),
            **extra,
        }

    async def spawn_worker(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        """A ``papayya worker`` process (SIGKILL it to crash it)."""
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "worker", *args,
            env=self.worker_env(**env), cwd=self.tmp, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        self.workers.append(process)
        return process

    def in_process_worker(self, **changes: Any) -> Worker:
        runtime = ProcessRuntime(self.tmp / "inproc", env={
            **os.environ, "PAPAYYA_AGENT_ENV": "SIDE_EFFECTS",
            "SIDE_EFFECTS": str(self.tmp / "side_effects.txt"),
        })  # fmt: skip
        self.runtimes.append(runtime)
        changes.setdefault("process_runtime", self.config.process_runtime)
        config = WorkerConfig(control_url=self.url, **changes)
        return Worker(
            self.app[keys.STORE], self.queue, {"process": runtime}, self.app[keys.RUN_TOKEN_SECRET],
            config,
        )  # fmt: skip

    def side_effects(self) -> list[str]:
        path = self.tmp / "side_effects.txt"
        return path.read_text().splitlines() if path.exists() else []


@asynccontextmanager
async def running_cloud(
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp: Path,
    fake_config: FakeConfig | None = None,
    *,
    worker: bool = True,
    lease_seconds: float = 3.0,
    heartbeat_seconds: float = 0.5,
    max_attempts: int = 3,
    unix_socket: bool = False,
    redis_url: str = REDIS_URL,
    **config: Any,
) -> AsyncIterator[Cloud]:
    """The cloud, its files in an ``agent_workspace`` (``tmp`` is left to the test); every
    project may use the process runtime unless ``process_runtime`` says otherwise."""
    with agent_workspace() as work:
        async with _running_cloud(
            dsn, monkeypatch, work, fake_config, worker=worker, lease_seconds=lease_seconds,
            heartbeat_seconds=heartbeat_seconds, max_attempts=max_attempts,
            unix_socket=unix_socket, redis_url=redis_url, **config,
        ) as cloud:  # fmt: skip
            try:
                yield cloud
            finally:  # the side effects and logs outlive the workspace, in the test's tmp
                for kept in work.iterdir():
                    if kept.is_file():
                        shutil.copy(kept, tmp / kept.name)
                cloud.tmp = tmp


@asynccontextmanager
async def _running_cloud(
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp: Path,
    fake_config: FakeConfig | None,
    *,
    worker: bool,
    lease_seconds: float,
    heartbeat_seconds: float,
    max_attempts: int,
    unix_socket: bool,
    redis_url: str,
    **config: Any,
) -> AsyncIterator[Cloud]:
    from aiohttp import web

    from server.app import init_app

    async with running_fake(fake_config) as fake:
        monkeypatch.setenv("PAPAYYA_OPENAI_BASE_URL", fake.openai_base_url)
        monkeypatch.setenv("PAPAYYA_OPENAI_API_KEY", PROVIDER_KEY)
        monkeypatch.setenv("PAPAYYA_ANTHROPIC_BASE_URL", fake.anthropic_base_url)
        monkeypatch.setenv("PAPAYYA_ANTHROPIC_API_KEY", PROVIDER_KEY)
        monkeypatch.setenv("PAPAYYA_HEARTBEAT_SECONDS", str(heartbeat_seconds))
        monkeypatch.setenv("PAPAYYA_LEASE_SECONDS", str(lease_seconds))
        monkeypatch.setenv("PAPAYYA_GRACE_SECONDS", "2")
        monkeypatch.setenv("PAPAYYA_MAX_ATTEMPTS", str(max_attempts))
        key = "cpk_test_" + uuid.uuid4().hex
        monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        # Tests receive callbacks on loopback; tests/security turns this back off.
        config.setdefault("callback_allow_private", True)
        # The process runtime is the operator's choice: tests are that operator.
        config.setdefault("process_runtime", ProcessRuntimePolicy("all"))
        settings = Config(
            database_url=dsn, redis_url=redis_url, data_dir=tmp / "data", port=port,
            control_url=url, queue_name=f"papayya:test:{uuid.uuid4().hex}",
            run_projectors=False, run_dispatcher=False, run_worker=False, **config,
        )  # fmt: skip
        app = init_app(settings, dsn)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        socket_path = None
        if unix_socket:  # a short path: sun_path holds 108 bytes
            socket_dir = Path(tempfile.mkdtemp(prefix="pp-"))
            os.chmod(socket_dir, 0o755)  # agents of another uid (a root worker's) connect too
            socket_path = socket_dir / "rt.sock"
            await web.UnixSite(runner, str(socket_path)).start()
        store = app[keys.STORE]
        wc = WorkerConfig.from_env(control_url=url, control_socket=socket_path)
        runtime = ProcessRuntime(tmp / "data", env={
            **os.environ, "PAPAYYA_AGENT_ENV": "SIDE_EFFECTS",
            "SIDE_EFFECTS": str(tmp / "side_effects.txt"),
        })  # fmt: skip
        cloud: Cloud | None = None
        try:
            async with background(
                store, dsn, settings, redis_url, scheduler=True, worker=worker,
                worker_config=wc, runtimes={"process": runtime},
            ) as services:  # fmt: skip
                cloud = Cloud(url, key, app, fake, services, settings, tmp, dsn)
                try:
                    yield cloud
                finally:
                    for extra in cloud.runtimes:
                        await extra.close()
                    for process in cloud.workers:
                        if process.returncode is None:
                            process.send_signal(signal.SIGKILL)
                            await process.wait()
        finally:
            await runtime.close()
            client = connect(redis_url)
            with contextlib.suppress(Exception):  # a test may have stopped its Redis
                await client.delete(settings.queue_name)
            await client.aclose()
            await runner.cleanup()


def bundle_bytes(*members: tuple[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar.gz bundle of ``members`` (name, bytes) and symbolic ``links`` (name: target)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return raw.getvalue()
