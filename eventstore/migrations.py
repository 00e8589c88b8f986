"""Apply ``sql/migrations/NNNN_name.sql`` in order, each in its own transaction, under an
advisory lock so that two processes starting at once do not race."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import asyncpg

from sql import MIGRATIONS_DIR

LOCK_ID: Final = 7291035
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


class Migration:
    def __init__(self, path: Path) -> None:
        match = _FILE.match(path.name)
        if match is None:
            raise ValueError(f"migration file name {path.name} is not NNNN_name.sql")
        self.version = int(match.group(1))
        self.name = match.group(2)
        self.path = path


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = sorted((Migration(p) for p in directory.glob("*.sql")), key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return found


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; returns the names of those applied."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
        try:
            return await _apply_pending(conn, directory)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, directory: Path) -> list[str]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    applied = []
    for migration in available(directory):
        if migration.version in done:
            continue
        async with conn.transaction():
            await conn.execute(migration.path.read_text())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied.append(f"{migration.version:04d}_{migration.name}")
    return applied
