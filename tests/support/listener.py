"""Helpers of the hostile-input and server-limit tests: the control plane behind the
production listener (``web.listener``), raw sockets, and a count of every row written."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from papayya.config import Config
from tests.support.api import Api
from web.listener import Guard, GuardedRunner, Limits


class Listening(Api):
    """A running control plane, and the ``Guard`` that counts its connections."""

    def __init__(self, url: str, key: str, app: Any, guard: Guard) -> None:
        super().__init__(url, key, app)
        self.guard = guard


@asynccontextmanager
async def listening(
    dsn: str, monkeypatch: pytest.MonkeyPatch, limits: Limits | None = None, **config: Any
) -> AsyncIterator[Listening]:
    """The control plane on a loopback port behind ``GuardedRunner``, as ``papayya api``
    serves it (``limits`` default to the production ones)."""
    from web.app import init_app

    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    config = {"run_projectors": False, "run_scheduler": False} | config
    app = init_app(Config(database_url=dsn, **config), dsn)
    runner = GuardedRunner(app, limits or Limits())
    await runner.setup()
    try:
        sites = await runner.start("127.0.0.1", 0)
        port = sites[0]._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield Listening(f"http://127.0.0.1:{port}", key, app, runner.guard)
    finally:
        await runner.cleanup()


def port_of(api: Api) -> int:
    return int(api.url.rsplit(":", 1)[1])


async def connect(
    api: Api, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ``api`` from the loopback address ``source``."""
    return await asyncio.open_connection("127.0.0.1", port_of(api), local_addr=(source, 0))


async def exchange(api: Api, data: bytes, source: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """Send ``data`` as is and read until the server closes the connection."""
    reader, writer = await connect(api, source)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, body


async def row_counts(dsn: str) -> dict[str, int]:
    """The number of rows of every table: what "nothing was written" is checked against."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        return {
            t["tablename"]: await conn.fetchval(f'SELECT count(*) FROM "{t["tablename"]}"')
            for t in tables
        }
    finally:
        await conn.close()


HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: "  # never finished


async def healthz_once(port: int, timeout: float) -> float:
    """One ``GET /healthz`` on a fresh connection; the seconds it took to answer 200."""
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), timeout - (time.monotonic() - started))
    finally:
        writer.close()
    status, _, body = split_response(raw)
    assert status == 200 and json.loads(body)["status"] == "ok", raw[:300]
    return time.monotonic() - started


async def flood(port: int, count: int, window: int) -> int:
    """Open ``count`` connections to ``port`` that each send half a request, 25 at a time,
    at most ``window`` held at once (oldest closed first); how many connected."""
    held: deque[asyncio.StreamWriter] = deque()

    async def half_sent() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # a connect the server's kernel refused: the flood goes on
            return False
        writer.write(HALF_SENT)
        held.append(writer)
        return True

    connected = 0
    try:
        for start in range(0, count, 25):
            done = await asyncio.gather(*(half_sent() for _ in range(min(25, count - start))))
            connected += sum(done)
            while len(held) > window:
                held.popleft().close()
    finally:
        while held:
            held.popleft().close()
        await asyncio.sleep(0.1)  # let the transports close their sockets
    return connected


if __name__ == "__main__":  # the flood, in a process of its own so that it slows no probe
    import sys

    port_, count_, window_ = sys.argv[1:]
    print(asyncio.run(flood(int(port_), int(count_), int(window_))), flush=True)
