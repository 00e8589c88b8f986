"""A worker's check, at start, that its agents will reach the API of its own installation.

Agents report to the control URL (or socket) their worker hands them, with a run token that
only the API of the worker's database accepts. A worker pointed at nothing, or at another
installation's server (the default ``127.0.0.1:8080`` on a machine where another one runs),
would start agents that fail with 401 after three attempts; it refuses to start instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

import aiohttp
import click

from workers.worker import WorkerConfig

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0
# A worker started beside its API (compose, systemd, a script) may come up first: it waits
# this long for the API to answer before it gives up (PAPAYYA_CONTROL_WAIT_SECONDS).
WAIT_SECONDS = 60.0


async def _installation_at(url: str, connector: aiohttp.BaseConnector | None) -> str | None:
    timeout = aiohttp.ClientTimeout(total=CHECK_SECONDS)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        http.get(f"{url.rstrip('/')}/healthz") as response,
    ):
        if response.status != 200:
            raise aiohttp.ClientResponseError(
                response.request_info, (), status=response.status, message=response.reason or ""
            )
        body = await response.json(content_type=None)
    found = body.get("installation") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


def _wait_seconds() -> float:
    raw = os.environ.get("PAPAYYA_CONTROL_WAIT_SECONDS") or str(WAIT_SECONDS)
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise click.ClickException("PAPAYYA_CONTROL_WAIT_SECONDS must be a number >= 0")
    return value


async def beside_api(config: WorkerConfig, socket: Path, installation: str) -> WorkerConfig:
    """``config`` with the API's own Unix socket when an API of this installation listens on
    ``socket`` (the data directory's, shared with a ``papayya server`` or ``papayya api``
    started beside this worker): its agents' runtime calls then go straight to it, not
    through the worker's relay or TCP. Unchanged if nothing of this installation answers
    there at once."""
    if config.control_socket is not None:
        return config
    try:
        found = await _installation_at("http://localhost", aiohttp.UnixConnector(str(socket)))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return config
    if found != installation:
        return config
    log.info("agents reach the API through its socket %s", socket)
    return dataclasses.replace(config, control_socket=socket)


async def check_control(config: WorkerConfig, installation: str) -> None:
    """Refuse (``click.ClickException``) unless the control plane answers ``/healthz`` with
    this database's installation id, over the socket if there is one, else over TCP; wait
    up to ``PAPAYYA_CONTROL_WAIT_SECONDS`` (60) for it to answer at all."""
    if config.control_socket is not None:
        where = f"the control socket {config.control_socket} (PAPAYYA_RUNTIME_SOCKET)"
    else:
        where = f"the control URL {config.control_url} (PAPAYYA_CONTROL_URL)"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _wait_seconds()
    waited = False
    while True:
        if config.control_socket is not None:
            url = "http://localhost"
            connector: aiohttp.BaseConnector | None = aiohttp.UnixConnector(
                str(config.control_socket)
            )
        else:
            url, connector = config.control_url, None
        try:
            found = await _installation_at(url, connector)
            break
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            if loop.time() >= deadline:
                raise click.ClickException(
                    f"{where} does not answer ({exc or type(exc).__name__}): this worker's "
                    "agents could not report. Start the API there, or point "
                    "PAPAYYA_CONTROL_URL at it"
                ) from None
            if not waited:
                log.warning("waiting for %s to answer (%s)", where, exc or type(exc).__name__)
                waited = True
            await asyncio.sleep(0.5)
    if found != installation:
        raise click.ClickException(
            f"{where} serves another installation ({found or 'an older papayya'}; this "
            f"worker's database is {installation}): its agents would be refused. Point "
            "PAPAYYA_CONTROL_URL at an API that uses this worker's PAPAYYA_DATABASE_URL"
        )
