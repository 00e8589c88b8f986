"""Projects and API keys. A key is shown once; only its SHA-256 is stored (the key is 256
random bits, so a fast hash is as safe as a slow one and keeps every request cheap)."""

from __future__ import annotations

import hashlib
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
    if not secret.startswith(KEY_PREFIX) or len(secret) < 20:
        raise InvalidInput(f"an API key starts with {KEY_PREFIX} and has at least 20 characters")
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


async def revoke_key(pool: Db, project_id: str, key_id: str) -> ApiKey:
    row = await pool.fetchrow(Q["revoke_key"], project_id, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return _key(row)


async def authenticate(pool: Db, key: str) -> str | None:
    """The project of a valid, unrevoked key, else ``None``."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    row = await pool.fetchrow(Q["authenticate"], hash_key(key))
    if row is None:
        return None
    if row["stale"]:
        await pool.execute(Q["touch_key"], row["key_id"])
    return str(row["project_id"])


async def bootstrap(pool: Db, key: str | None = None) -> NewApiKey | None:
    """On an empty database: the ``default`` project and one key (``key`` if given)."""
    if await pool.fetchval(Q["count_projects"]):
        return None
    try:
        project = await create_project(pool, "default")
    except Conflict:  # another server bootstrapped at the same moment
        return None
    return await create_key(pool, project.id, "bootstrap", key)
