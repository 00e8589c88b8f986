"""Applying every migration to an empty database gives exactly ``sql/schema.sql``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import sql
from eventstore.migrations import migrate
from tests.support.db import with_database

CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity
          FROM information_schema.columns WHERE table_schema = 'public'
           AND table_name <> 'schema_migrations' ORDER BY 1, 2""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
          FROM pg_constraint WHERE connamespace = 'public'::regnamespace
           AND conrelid::regclass::text <> 'schema_migrations' ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' AND tablename <> 'schema_migrations' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
         WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT proname, pg_get_functiondef(oid) FROM pg_proc
         WHERE pronamespace = 'public'::regnamespace ORDER BY 1""",
}


async def catalog(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {k: [tuple(r) for r in await conn.fetch(q)] for k, q in CATALOG.items()}
    finally:
        await conn.close()


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
