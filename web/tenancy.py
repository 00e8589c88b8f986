"""Projects and API keys. A key is shown once; only its SHA-256 is stored (the key is 256
random bits, so a fast hash is as safe as a slow one and keeps every request cheap)."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from papayya.errors import Conflict, InvalidInput, NotFound
from sql import queries

Q: Final = queries("control.sql")
# Functions take a pool, or a connection to run inside the caller's transaction.
Db = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
KEY_PREFIX: Final = "cpk_"
# What a registered key looks like: the prefix, then URL-safe characters (what the server's
# own keys are made of), 20 to 200 characters in all (``authenticate`` reads no longer ones).
KEY_SHAPE: Final = re.compile(r"cpk_[A-Za-z0-9_-]{16,196}")
BOOTSTRAP_ENV: Final = "PAPAYYA_BOOTSTRAP_API_KEY"
# Serialises bootstraps of servers starting at once on the same database.
BOOTSTRAP_LOCK: Final = 0x70617061_79796101


class Project(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: datetime


class ApiKey(msgspec.Struct, frozen=True):
    id: str
    project_id: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class NewApiKey(msgspec.Struct, frozen=True):
    """A key as created: ``key`` is the secret, shown this once."""

    id: str
    project_id: str
    name: str | None
    prefix: str
    created_at: datetime
    key: str


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


def _project(row: asyncpg.Record) -> Project:
    return Project(row["project_id"], row["name"], row["created_at"])


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        row["key_id"],
        row["project_id"],
        row["name"],
        row["prefix"],
        row["created_at"],
        row["last_used_at"],
        row["revoked_at"],
    )


async def create_project(pool: Db, name: str) -> Project:
    try:
        row = await pool.fetchrow(Q["create_project"], new_id("proj"), name)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a project named {name!r} exists") from None
    assert row is not None
    return _project(row)


async def get_project(pool: Db, project_id: str) -> Project:
    row = await pool.fetchrow(Q["project_by_id"], project_id)
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return _project(row)


async def project_by_name(pool: Db, name: str) -> Project | None:
    row = await pool.fetchrow(Q["project_by_name"], name)
    return None if row is None else _project(row)


async def create_key(
    pool: Db, project_id: str, name: str | None = None, key: str | None = None
) -> NewApiKey:
    """A new key for the project; ``key`` registers a given secret (bootstrap) instead."""
    secret = key or KEY_PREFIX + secrets.token_urlsafe(32)
    check_key_shape(secret)
    try:
        row = await pool.fetchrow(
            Q["create_key"], new_id("key"), project_id, name, secret[:10], hash_key(secret)
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("that key is already registered") from None
    assert row is not None
    k = _key(row)
    return NewApiKey(k.id, k.project_id, k.name, k.prefix, k.created_at, secret)


async def list_keys(pool: Db, project_id: str) -> list[ApiKey]:
    return [_key(row) for row in await pool.fetch(Q["list_keys"], project_id)]


async def revoke_key(pool: asyncpg.Pool, project_id: str, key_id: str) -> ApiKey:
    """Revoke the key; every server then ends the streams it opened (``web.revocation``)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q["revoke_key"], project_id, key_id)
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        await conn.execute(Q["notify_revoked"], key_id)
    return _key(row)


async def authenticate(pool: Db, key: str) -> str | None:
    """The project of a valid, unrevoked key, else ``None``."""
    found = await authenticate_key(pool, key)
    return None if found is None else found[0]


async def authenticate_key(pool: Db, key: str) -> tuple[str, str] | None:
    """``(project id, key id)`` of a valid, unrevoked key, else ``None``."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = await pool.fetchrow(Q["authenticate"], hash_key(key))
    if row is None:
        return None
    if row["stale"]:
        await pool.execute(Q["touch_key"], row["key_id"])
    return str(row["project_id"]), str(row["key_id"])


def check_key_shape(key: str, source: str = "an API key") -> None:
    """Raise ``InvalidInput`` unless ``key`` has the shape of a key (``KEY_SHAPE``)."""
    if not KEY_SHAPE.fullmatch(key):
        raise InvalidInput(
            f"{source} starts with {KEY_PREFIX} followed by letters, digits, '_' or '-', "
            "20 to 200 characters in all"
        )


def check_bootstrap_key(key: str | None) -> None:
    """Refuse a malformed ``PAPAYYA_BOOTSTRAP_API_KEY`` before the server writes anything."""
    if key is not None:
        check_key_shape(key, BOOTSTRAP_ENV)


async def bootstrap(pool: asyncpg.Pool, key: str | None = None) -> NewApiKey | None:
    """On an empty database: the ``default`` project and one key (``key`` if given), in one
    transaction. A ``default`` project that never had a key (left by a first start of an
    older version that failed between the two) gets its key now."""
    check_bootstrap_key(key)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BOOTSTRAP_LOCK)
        project_id = await conn.fetchval(Q["keyless_default_project"])
        if project_id is None:
            if await conn.fetchval(Q["count_projects"]):
                return None
            project_id = (await create_project(conn, "default")).id
        return await create_key(conn, project_id, "bootstrap", key)
