"""A worker's check, at start, that its agents will reach the API of its own installation.

Agents report to the control URL (or socket) their worker hands them, with a run token that
only the API of the worker's database accepts. A worker pointed at nothing, or at another
installation's server (the default ``127.0.0.1:8080`` on a machine where another one runs),
would start agents that fail with 401 after three attempts; it refuses to start instead.
"""

from __future__ import annotations

import aiohttp
import click

from workers.worker import WorkerConfig

CHECK_SECONDS = 10.0


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


async def check_control(config: WorkerConfig, installation: str) -> None:
    """Refuse (``click.ClickException``) unless the control plane answers ``/healthz`` with
    this database's installation id, over the socket if there is one, else over TCP."""
    if config.control_socket is not None:
        where = f"the control socket {config.control_socket} (PAPAYYA_RUNTIME_SOCKET)"
        url, connector = "http://localhost", aiohttp.UnixConnector(str(config.control_socket))
    else:
        where = f"the control URL {config.control_url} (PAPAYYA_CONTROL_URL)"
        url, connector = config.control_url, None
    try:
        found = await _installation_at(url, connector)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise click.ClickException(
            f"{where} does not answer ({exc or type(exc).__name__}): this worker's agents "
            "could not report. Start the API there, or point PAPAYYA_CONTROL_URL at it"
        ) from None
    if found != installation:
        raise click.ClickException(
            f"{where} serves another installation ({found or 'an older papayya'}; this "
            f"worker's database is {installation}): its agents would be refused. Point "
            "PAPAYYA_CONTROL_URL at an API that uses this worker's PAPAYYA_DATABASE_URL"
        )
