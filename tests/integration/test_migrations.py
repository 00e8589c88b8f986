"""Applying every migration to an empty database gives exactly ``sql/schema.sql``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import sql
from eventstore.migrations import migrate
from tests.support.catalog import CATALOG, catalog
from tests.support.db import with_database


@pytest.fixture
async def second_empty_dsn(admin_dsn: str) -> AsyncIterator[str]:
    name = "papayya_schema_check"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(admin_dsn, name)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def test_migrations_equal_schema_sql(empty_dsn: str, second_empty_dsn: str) -> None:
    applied = await migrate(empty_dsn)
    assert applied and applied[0] == "0001_event_store"
    conn = await asyncpg.connect(second_empty_dsn)
    await conn.execute(sql.schema())
    await conn.close()
    migrated, declared = await catalog(empty_dsn), await catalog(second_empty_dsn)
    for kind in CATALOG:
        assert migrated[kind] == declared[kind], f"{kind} differ between migrations and schema"
    assert migrated["functions"], "the catalog query found nothing: the test would be empty"


async def test_migrate_is_idempotent_and_safe_concurrently(empty_dsn: str) -> None:
    results = await asyncio.gather(*(migrate(empty_dsn) for _ in range(4)))
    assert sum(1 for r in results if r) == 1  # exactly one process applied them
    assert await migrate(empty_dsn) == []
