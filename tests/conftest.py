"""Test databases: one migrated template per session, cloned for each test that asks.

Postgres comes from PAPAYYA_TEST_DATABASE_URL, else the machine's on 127.0.0.1:5432, else an
embedded one under a temporary directory, so the suite passes on a fresh laptop too.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from eventstore.embedded import EmbeddedPostgres
from eventstore.migrations import migrate
from eventstore.postgres import PostgresEventStore
from tests.support.api import Api, ApiClient, control_plane, running_api
from tests.support.db import (
    LOCAL_POSTGRES,
    cloned_database,
    drop_database,
    reachable,
    run_sync,
    with_database,
)

if TYPE_CHECKING:
    from pytest_aiohttp import AiohttpClient


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A DSN to a maintenance database of the server the tests use."""
    configured = os.environ.get("PAPAYYA_TEST_DATABASE_URL")
    if configured:
        yield configured
    elif run_sync(reachable(LOCAL_POSTGRES)):
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
    run_sync(drop_database(admin_dsn, name))


@pytest.fixture
async def empty_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all."""
    name = f"papayya_empty_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin_dsn, name)
    await drop_database(admin_dsn, name)


@pytest.fixture
async def dsn(admin_dsn: str, template_db: str) -> AsyncIterator[str]:
    async with cloned_database(admin_dsn, template_db) as url:
        yield url


@pytest.fixture
async def pg_store(dsn: str) -> AsyncIterator[PostgresEventStore]:
    store = await PostgresEventStore.connect(dsn, poll_interval=0.1)
    yield store
    await store.close()


@pytest.fixture
async def api(dsn: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    async with running_api(dsn, monkeypatch) as running:
        yield running


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default project's key, which the control plane bootstraps from the environment."""
    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    return key


@pytest.fixture
async def api_client(dsn: str, api_key: str, aiohttp_client: AiohttpClient) -> ApiClient:
    """The control plane on pytest-aiohttp's test server, and a client that takes paths
    relative to it (``await api_client.get("/v1/projects", headers=...)``)."""
    return await aiohttp_client(control_plane(dsn))


@pytest.fixture
async def http() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session
