"""The worker that ``papayya server`` runs beside its API hands its agents the API's own Unix
socket (``PAPAYYA_RUNTIME_SOCKET``): their runtime calls go straight to the API, not through
the worker's relay or TCP (bench/e2e.py: the relay cost the worker 2 ms of CPU per run)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from tests.support.cloud import REDIS_URL
from tests.support.operator import ServerProcess, free_port, local_server_env, work_dir
from tests.support.process_runtime import Tenant, bundle, call, deploy, two_tenants

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

AGENT = b"""
import os

from papayya import agent


@agent
def where(task):
    return {"socket": os.environ.get("PAPAYYA_RUNTIME_SOCKET"),
            "url": os.environ.get("PAPAYYA_RUNTIME_URL")}
"""


async def _run_where(http: aiohttp.ClientSession, base: str, owner: Tenant) -> Any:
    """Deploy the agent above and run it to its end; the run."""
    agent = {"name": "where", "slug": "where", "config": {}}
    status, body = await call(http, "POST", f"{base}/v1/agents", owner, agent)
    assert status == 201, body
    status, body = await deploy(
        http, base, owner, "where", bundle({"agent.py": AGENT}), runtime="process"
    )
    assert status == 202, body
    status, run = await call(http, "POST", f"{base}/v1/agents/where/runs", owner, {})
    assert status == 201, run
    async with asyncio.timeout(90):
        while run["status"] not in ("completed", "failed"):
            await asyncio.sleep(0.1)
            status, run = await call(http, "GET", f"{base}/v1/runs/{run['id']}", owner)
    return run


async def test_the_servers_worker_gives_agents_the_apis_own_socket(dsn: str) -> None:
    owner, _ = await two_tenants(dsn)
    with work_dir() as work:
        work.chmod(0o1777)  # the agent runs as a uid of its project's when tests run as root
        env = local_server_env(dsn, REDIS_URL, work / "data", owner.key)
        server = ServerProcess(free_port(), env, work / "server.log", ("--concurrency", "1"))
        server.start()
        try:
            await server.ready()
            base = server.url
            async with aiohttp.ClientSession() as http:
                run = await _run_where(http, base, owner)
        finally:
            server.kill()
        log = server.log.read_text()
        socket = str((work / "data" / "papayya.sock").resolve())
    assert run["status"] == "completed", (run, log)
    assert run["output"] == {"socket": socket, "url": None}, log


async def test_a_worker_beside_the_api_gives_agents_its_socket(dsn: str) -> None:
    """``papayya worker`` with the data directory of a ``papayya server`` on its machine
    finds the API's socket there (its installation's, it checks) and uses it, though it was
    given only the control URL."""
    owner, _ = await two_tenants(dsn)
    with work_dir() as work:
        work.chmod(0o1777)
        env = local_server_env(dsn, REDIS_URL, work / "data", owner.key)
        server = ServerProcess(free_port(), env, work / "server.log", ("--concurrency", "0"))
        server.start()
        worker = None
        try:
            await server.ready()
            base = server.url
            with (work / "worker.log").open("ab") as out:
                worker = subprocess.Popen(  # noqa: ASYNC220  (a test's setup)
                    [sys.executable, "-m", "server.cli", "worker", "--runtime", "process"],
                    env={**env, "PAPAYYA_CONTROL_URL": base}, stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            async with aiohttp.ClientSession() as http:
                run = await _run_where(http, base, owner)
        finally:
            if worker is not None:
                worker.kill()
                worker.wait()
            server.kill()
        log = (work / "worker.log").read_text()
        socket = str((work / "data" / "papayya.sock").resolve())
    assert run["status"] == "completed", (run, log)
    assert run["output"] == {"socket": socket, "url": None}, log
