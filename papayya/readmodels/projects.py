"""Projects and API keys. A key is shown once; only its SHA-256 is stored (the key is 256
random bits, so a fast hash is as safe as a slow one and keeps every request cheap).

The functions take a pool or a connection (``Db``), so that they join a caller's transaction
(a new project with its first key; the operator CLI's single connection). ``Projects`` is the
repository the server holds: the same calls on its pool, and the transactions that combine
them."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from eventstore.types import NO_STREAM, NewEvent
from papayya.domain.defaults import ProjectDefaults
from papayya.errors import Conflict, InvalidInput, NotFound
from papayya.installation import installation_id
from papayya.readmodels import Db, Repository
from sql import queries

Q: Final = queries("control.sql")
QD: Final = queries("dashboard.sql")
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
    slug: str | None = None
    defaults: ProjectDefaults = ProjectDefaults()
    # The default time limit of the project's runs (``None``: the built-in 1 h).
    default_timeout_seconds: int | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Project:
        return cls(
            row["project_id"], row["name"], row["created_at"], row["slug"], defaults_of(row),
            row["default_timeout_seconds"],
        )  # fmt: skip


def defaults_of(row: asyncpg.Record) -> ProjectDefaults:
    """The project's run defaults, from its row (every column, each ``NULL`` for no limit)."""
    return ProjectDefaults(
        budget_cents=row["default_budget_cents"], max_steps=row["default_max_steps"]
    )


class ApiKey(msgspec.Struct, frozen=True):
    id: str
    project_id: str
    name: str | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ApiKey:
        return cls(
            row["key_id"],
            row["project_id"],
            row["name"],
            row["prefix"],
            row["created_at"],
            row["last_used_at"],
            row["revoked_at"],
        )


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


async def create_project(pool: Db, name: str, slug: str | None = None) -> Project:
    try:
        row = await pool.fetchrow(Q["create_project"], new_id("proj"), name, slug)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a project named {name!r} or with slug {slug!r} exists") from None
    assert row is not None
    return Project.from_row(row)


async def update_project(
    pool: Db, project_id: str, name: str | None, slug: str | None, set_slug: bool
) -> Project:
    """Rename the project and/or set its slug (``set_slug``: ``slug`` is meant, ``None``
    included)."""
    try:
        row = await pool.fetchrow(Q["update_project"], project_id, name, slug, set_slug)
    except asyncpg.UniqueViolationError:
        raise Conflict("another project has that name or slug") from None
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return Project.from_row(row)


async def set_project_timeout(pool: Db, project_id: str, seconds: int | None) -> Project:
    """Set the default time limit of the project's runs (``None``: back to the built-in 1 h).
    Runs queued before keep the limit recorded with them."""
    row = await pool.fetchrow(Q["set_project_timeout"], project_id, seconds)
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return Project.from_row(row)


async def set_defaults(pool: Db, project_id: str, changes: Mapping[str, int | None]) -> None:
    """Set some of the project's run defaults (``ProjectDefaults`` fields; ``None``: no
    limit), the others kept. Call it in a transaction: the row is locked from its read to its
    write, so concurrent changes of different fields all stay."""
    row = await pool.fetchrow(Q["project_defaults_for_update"], project_id)
    if row is None:
        raise NotFound(f"project {project_id} not found")
    new = msgspec.structs.replace(defaults_of(row), **changes)
    await pool.execute(Q["set_project_defaults"], project_id, new.budget_cents, new.max_steps)


async def get_project(pool: Db, project_id: str) -> Project:
    row = await pool.fetchrow(Q["project_by_id"], project_id)
    if row is None:
        raise NotFound(f"project {project_id} not found")
    return Project.from_row(row)


async def project_by_name(pool: Db, name: str) -> Project | None:
    row = await pool.fetchrow(Q["project_by_name"], name)
    return None if row is None else Project.from_row(row)


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
    k = ApiKey.from_row(row)
    return NewApiKey(k.id, k.project_id, k.name, k.prefix, k.created_at, secret)


async def list_keys(pool: Db, project_id: str) -> list[ApiKey]:
    return [ApiKey.from_row(row) for row in await pool.fetch(Q["list_keys"], project_id)]


async def revoke_key(pool: asyncpg.Pool, project_id: str, key_id: str) -> ApiKey:
    """Revoke the key; every server then ends the streams it opened (``web.revocation``)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(Q["revoke_key"], project_id, key_id)
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        await conn.execute(Q["notify_revoked"], key_id)
    return ApiKey.from_row(row)


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


async def first_project_id(pool: Db) -> str | None:
    """The oldest project (the bootstrap's), ``None`` before any exists."""
    row = await pool.fetchrow(QD["first_project"])
    return None if row is None else str(row["project_id"])


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


class Projects(Repository):
    """The server's projects, their API keys, and the keys' revocations."""

    async def create_with_key(
        self, name: str, key_name: str, slug: str | None = None
    ) -> tuple[Project, NewApiKey]:
        """A new project and its first key, in one transaction."""
        async with self.transaction() as conn:
            project = await create_project(conn, name, slug)
            return project, await create_key(conn, project.id, key_name)

    async def get(self, project_id: str) -> Project:
        return await get_project(self.pool, project_id)

    async def update(
        self,
        project_id: str,
        name: str | None,
        slug: str | None,
        set_slug: bool,
        defaults: Mapping[str, int | None] | None = None,
        *,
        timeout_seconds: int | None = None,
        set_timeout: bool = False,
    ) -> Project:
        """Rename, set the slug, change some run defaults and (``set_timeout``) the runs'
        default time limit, in one transaction."""
        async with self.transaction() as conn:
            if defaults:
                await set_defaults(conn, project_id, defaults)
            if set_timeout:
                await set_project_timeout(conn, project_id, timeout_seconds)
            return await update_project(conn, project_id, name, slug, set_slug)

    async def defaults(self, project_id: str) -> ProjectDefaults:
        """The limits the project's runs get when neither they nor their agent state one."""
        return (await get_project(self.pool, project_id)).defaults

    async def installation(self) -> str:
        """This database's installation id, made on first use."""
        return await installation_id(self.pool)

    async def first_id(self) -> str | None:
        return await first_project_id(self.pool)

    async def create_key(self, project_id: str, name: str | None = None) -> NewApiKey:
        return await create_key(self.pool, project_id, name)

    async def create_key_once(
        self, stream_id: str, event: NewEvent, project_id: str, name: str | None
    ) -> NewApiKey:
        """A new key, with ``event`` as the first event of ``stream_id`` in the same
        transaction: a second call for the same stream raises ``ConcurrencyError`` and makes
        no key (a one-time grant)."""
        async with self.transaction(appends=True) as conn:
            await self.store.append_on(conn, stream_id, event, NO_STREAM)
            return await create_key(conn, project_id, name)

    async def list_keys(self, project_id: str) -> list[ApiKey]:
        return await list_keys(self.pool, project_id)

    async def revoke_key(self, project_id: str, key_id: str) -> ApiKey:
        return await revoke_key(self.pool, project_id, key_id)

    async def authenticate(self, key: str) -> tuple[str, str] | None:
        """``(project id, key id)`` of a valid, unrevoked key, else ``None``."""
        return await authenticate_key(self.pool, key)

    async def revoked(self, key_ids: list[str]) -> list[str]:
        """The keys among ``key_ids`` that are revoked."""
        return [row["key_id"] for row in await self.pool.fetch(Q["revoked_keys"], key_ids)]

    async def bootstrap(self, key: str | None = None) -> NewApiKey | None:
        return await bootstrap(self.pool, key)
