"""Deploy benchmark: image build time, and cold start of a deployed agent in Docker.

Run from the repo root after ``make services``: ``.venv/bin/python bench/deploy.py [--runs N]``.
It creates a throw-away database on ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local
server), serves the control plane in this process on TCP and a Unix socket, with the
scheduler role and a worker with the Docker runtime on the machine's Redis
(``PAPAYYA_BENCH_REDIS_URL``), and prints a Markdown table. Not a test.

Measured:
- build: ``POST /v1/agents/{id}/deploy`` until the deployment is ``ready`` (built, pushed),
  for a small agent with no requirements and for one with ``openai`` (pip's cache warm, the
  base image's layers already in the registry), each with files never built before, so
  Docker's layer cache cannot answer.
- container start → agent code running: ``DockerRuntime.start`` until the agent's first line
  (``time.time()`` inside the container: one clock), image cached.
- queued → agent code running: ``POST /v1/agents/{id}/runs`` until the same point, through
  the dispatcher, Redis and the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import platform
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from papayya import runtokens  # noqa: E402
from papayya.config import Config  # noqa: E402
from papayya.domain import events as ev  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
AGENT = """# {nonce}
import time
from papayya import agent

@agent
def bench():
    return {{"t": time.time()}}
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def services_env() -> dict[str, str]:
    path = ROOT / ".papayya" / "services.env"
    if not path.exists():
        sys.exit("run `make services` first")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def bundle(requirements: str | None) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        files = {"agent.py": AGENT.format(nonce=uuid.uuid4().hex)}
        if requirements:
            files["requirements.txt"] = requirements
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


class Bench:
    def __init__(self, url: str, key: str, app: Any) -> None:
        self.url, self.key, self.app = url, key, app

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession(headers={"X-Api-Key": self.key}) as http,
            http.request(method, self.url + path, json=body) as resp,
        ):
            data = await resp.json()
            assert resp.status < 300, data
            return data

    async def deploy(self, slug: str, requirements: str | None) -> tuple[float, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("file", bundle(requirements), filename="b.tar.gz")
        started = time.monotonic()
        async with (
            aiohttp.ClientSession(headers={"X-Api-Key": self.key}) as http,
            http.post(f"{self.url}/v1/agents/{slug}/deploy", data=form) as resp,
        ):
            made = await resp.json()
            assert resp.status == 202, made
        while True:
            deployment = await self.call("GET", f"/v1/deployments/{made['id']}")
            if deployment["status"] != "building":
                break
            await asyncio.sleep(0.1)
        assert deployment["status"] == "ready", deployment["build_log"][-3000:]
        return time.monotonic() - started, deployment


async def measure(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    from aiohttp import web

    from server.app import init_app
    from web import keys
    from workers.docker import DockerRuntime
    from workers.queue import connect
    from workers.runtime import Deployment, Launch
    from workers.services import background
    from workers.worker import WorkerConfig

    env = services_env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ.setdefault(name, env.get(name, "papayya"))
    admin_dsn = os.environ.get("PAPAYYA_BENCH_DATABASE_URL", DEFAULT_DSN)
    redis_url = os.environ.get("PAPAYYA_BENCH_REDIS_URL", DEFAULT_REDIS)
    name = f"papayya_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
    tmp = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    socket_path = tmp / "api.sock"
    key = "cpk_bench_" + uuid.uuid4().hex
    os.environ["PAPAYYA_BOOTSTRAP_API_KEY"] = key
    await migrate(dsn)
    config = Config(
        database_url=dsn, redis_url=redis_url, data_dir=tmp / "data", port=0,
        queue_name=f"papayya:bench:{uuid.uuid4().hex}", runtime_socket=socket_path,
        run_projectors=False, run_dispatcher=False, run_worker=False,
        s3_endpoint=env["PAPAYYA_S3_ENDPOINT"], s3_bucket=env["PAPAYYA_S3_BUCKET"],
        registry=env["PAPAYYA_REGISTRY"], base_image=env["PAPAYYA_BASE_IMAGE"],
    )  # fmt: skip
    app = init_app(config, dsn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    await web.UnixSite(runner, str(socket_path)).start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    bench = Bench(url, key, app)
    rows: list[tuple[str, str, str]] = []
    runtime = DockerRuntime()
    try:
        await bench.call("POST", "/v1/agents", {"name": "b", "slug": "bench", "config": {}})
        small, _ = await bench.deploy("bench", None)
        rows.append(("build + push, no requirements", f"{small:.1f} s", "1 build"))
        if not args.quick:
            # A new requirements file: the virtualenv layer is built and pushed anew.
            fresh = f"# {uuid.uuid4().hex}\nopenai>=1.66,<4\n"
            with_openai, _ = await bench.deploy("bench", fresh)
            rows.append(("build + push, requirements: openai", f"{with_openai:.1f} s", "1 build"))
            # The runs below use the small agent: the newest version is the openai one.
            await bench.deploy("bench", None)

        store = app[keys.STORE]
        row = await store.pool.fetchrow(
            "SELECT * FROM deployments WHERE agent_id = (SELECT agent_id FROM agents"
            " WHERE slug = 'bench') AND status = 'ready' ORDER BY version DESC LIMIT 1"
        )
        assert row is not None
        dep = Deployment.from_row(row)
        await runtime.ensure_image(dep.image or "")
        secret = app[keys.RUN_TOKEN_SECRET]
        direct: list[float] = []
        for _ in range(args.runs):
            queued = ev.RunQueued(run_id=f"run_{uuid.uuid4().hex[:12]}",
                                  project_id=dep.project_id, agent_id=dep.agent_id)  # fmt: skip
            state = await app[keys.RUNS].queue(queued)
            state = await app[keys.RUNS].append(state, [ev.RunStarted(attempt=1)])
            launch = Launch(state.run_id, 1, dep, runtokens.mint(secret, state.run_id, 1), url,
                            socket_path)  # fmt: skip
            started = time.time()
            handle = await runtime.start(launch)
            assert await handle.wait() == 0, handle.output()
            done = await app[keys.RUNS].load(state.run_id)
            direct.append(done.output["t"] - started)
        rows += stats("container start → agent code running", direct)

        wc = WorkerConfig.from_env(control_url=url, control_socket=socket_path)
        async with background(
            store, dsn, config, redis_url, scheduler=True, worker=True, worker_config=wc,
            runtimes={"docker": runtime},
        ):  # fmt: skip
            queued_times: list[float] = []
            for _ in range(args.runs):
                started = time.time()
                run = await bench.call("POST", "/v1/agents/bench/runs", {})
                while (state := await app[keys.RUNS].load(run["id"])).status != "completed":
                    assert state.status in ("queued", "running"), state
                    await asyncio.sleep(0.02)
                queued_times.append(state.output["t"] - started)
            rows += stats("queued → agent code running (dispatcher, Redis, worker)", queued_times)
    finally:
        await runtime.close()
        await runner.cleanup()
        client = connect(redis_url)
        await client.delete(config.queue_name)
        await client.aclose()
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
    return rows


def stats(label: str, seconds: list[float]) -> list[tuple[str, str, str]]:
    ms = [s * 1000 for s in seconds]
    n = f"{len(ms)} runs"
    return [
        (f"{label}, p50", f"{percentile(ms, 50):.0f} ms", n),
        (f"{label}, p99", f"{percentile(ms, 99):.0f} ms", n),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="cold starts to measure")
    parser.add_argument("--quick", action="store_true", help="skip the openai build")
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    print(f"\n{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()}\n")
    print("| measure | value | over |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    main()
