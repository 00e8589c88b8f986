"""Helpers of the process-runtime security tests: two tenants made straight in the database
(so a server can start with ``PAPAYYA_PROCESS_RUNTIME=projects:<id>`` already naming one),
bundles, and a real ``papayya server`` process to attack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from papayya.readmodels import projects
from tests.support.cloud import REDIS_URL, TERMINAL, bundle_bytes, free_port


@dataclass(frozen=True)
class Tenant:
    project_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}


async def two_tenants(dsn: str) -> tuple[Tenant, Tenant]:
    """The ``default`` project with its bootstrap key (as a first start makes it), and a
    second project with a key of its own."""
    bootstrap_key = "cpk_boot_" + uuid.uuid4().hex
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        made = await projects.bootstrap(pool, bootstrap_key)
        assert made is not None
        other = await projects.create_project(pool, "tenant-b")
        other_key = await projects.create_key(pool, other.id, "b")
    finally:
        await pool.close()
    return Tenant(made.project_id, bootstrap_key), Tenant(other.id, other_key.key)


async def rows(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def bundle(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    return bundle_bytes(*files.items(), links=links)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, tenant: Tenant, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=tenant.headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def deploy(
    http: aiohttp.ClientSession, base: str, tenant: Tenant, agent: str, content: bytes,
    **fields: str,
) -> tuple[int, Any]:  # fmt: skip
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", content, filename="b.tar.gz", content_type="application/gzip")
    async with http.post(
        f"{base}/v1/agents/{agent}/deploy", data=form, headers=tenant.headers
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def wait_for_run(
    http: aiohttp.ClientSession, base: str, tenant: Tenant, run_id: str, timeout: float = 90
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            status, body = await call(http, "GET", f"{base}/v1/runs/{run_id}", tenant)
            assert status == 200, body
            if body["status"] in TERMINAL:
                return dict(body)
            await asyncio.sleep(0.2)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.asynccontextmanager
async def papayya_server(env: dict[str, str], work: Path) -> AsyncIterator[Server]:
    """``papayya server`` in a process of its own (root here, as in CI), logging to a file."""
    port = free_port()
    log = work / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: ASYNC220  (a test's fixture, not a request path)
            [sys.executable, "-m", "server.cli", "server", "--port", str(port),
             "--concurrency", "1"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(90):
            while True:
                assert process.poll() is None, log.read_text()
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield Server(url, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


def server_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any Papayya or provider setting, plus these."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAPAYYA_", "OPENAI_", "ANTHROPIC_", "AWS_"))
    }
    return env | {"PAPAYYA_REDIS_URL": REDIS_URL} | settings
