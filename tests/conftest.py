"""Test databases: one migrated template per session, cloned for each test that asks.

Postgres comes from PAPAYYA_TEST_DATABASE_URL, else the machine's on 127.0.0.1:5432, else an
embedded one under a temporary directory, so the suite passes on a fresh laptop too.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from eventstore.embedded import EmbeddedPostgres
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore

T = TypeVar("T")
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A DSN to a maintenance database of the server the tests use."""
    configured = os.environ.get("PAPAYYA_TEST_DATABASE_URL")
    if configured:
        yield configured
    elif run_sync(_reachable(LOCAL_POSTGRES)):
        yield LOCAL_POSTGRES
    else:
        with tempfile.TemporaryDirectory(prefix="papayya-pg-") as tmp:
            embedded = EmbeddedPostgres(Path(tmp))
            dsn = embedded.start()
            yield with_database(dsn, "postgres")
            embedded.stop()


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> Iterator[str]:
    name = f"papayya_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        await migrate(with_database(admin_dsn, name))

    run_sync(create())
    yield name
    run_sync(_drop(admin_dsn, name))


async def _drop(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def empty_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = f"papayya_empty_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin_dsn, name)
    await _drop(admin_dsn, name)


@asynccontextmanager
async def cloned_database(admin_dsn: str, template: str) -> AsyncIterator[str]:
    """A migrated database of the caller's own, cloned from the template, dropped after."""
    name = f"papayya_t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    await conn.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        await _drop(admin_dsn, name)


@pytest.fixture
async def dsn(admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    async with cloned_database(admin_dsn, template_db) as url:
        yield url


@pytest.fixture
async def pg_store(dsn: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.1)
    yield store
    await store.close()


class Api:
    """A running control plane on a real port, with the default project's key."""

    def __init__(self, url: str, key: str, app: Any) -> None:
        self.url = url
        self.key = key
        self.app = app

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-Api-Key": key or self.key}


@asynccontextmanager
async def running_api(
    dsn: str, monkeypatch: pytest.MonkeyPatch, projectors: bool = False, scheduler: bool = False
) -> AsyncIterator[Api]:
    """The control plane on a free loopback port, configured from the environment."""
    from aiohttp import web

    from papayya.config import Config
    from server.app import init_app

    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    # Tests drive the projectors (catch_up) and the cron scheduler (tick, with a clock of
    # their own) themselves unless they ask for live ones.
    config = Config(database_url=dsn, run_projectors=projectors, run_scheduler=scheduler)
    app = init_app(config, dsn)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Api(f"http://127.0.0.1:{port}", key, app)
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async with running_api(dsn, monkeypatch) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session
