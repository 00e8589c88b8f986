"""Project secrets: named values a project's agents find in their environment (issue 16 §3,
docs/security.md). Set over the API, sealed at once with the server's secrets key, listed by
name only, opened only by a worker starting one of the project's agents."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from eventstore.postgres import PostgresEventStore
from papayya.errors import InvalidInput, NotFound
from papayya.readmodels import Repository
from papayya.secretbox import SecretBox
from sql import queries

Q: Final = queries("secrets.sql")
MAX_NAME: Final = 256
MAX_VALUE_BYTES: Final = 64 * 1024
# The runtime's own variables: a secret of that name would be overwritten, or would
# redirect the runtime, so it is refused rather than dropped without a word.
RESERVED_PREFIX: Final = "PAPAYYA_"
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class SecretName(msgspec.Struct, frozen=True, kw_only=True):
    """A secret as the API shows it: never its value."""

    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> SecretName:
        return cls(name=row["name"], created_at=row["created_at"], updated_at=row["updated_at"])


def check_name(name: str) -> str:
    """``name`` if it can be an environment variable's name; ``InvalidInput`` otherwise."""
    if not name:
        raise InvalidInput("a secret's name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"a secret's name has at most {MAX_NAME} characters")
    if "=" in name or _CONTROL.search(name) or name != name.strip():
        raise InvalidInput("a secret's name holds no '=', control character or edge space")
    if name.upper().startswith(RESERVED_PREFIX):
        raise InvalidInput(f"names starting with {RESERVED_PREFIX} are the runtime's own")
    return name


def check_value(value: str) -> str:
    if "\x00" in value:
        raise InvalidInput("a secret's value holds no NUL character")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise InvalidInput(f"a secret's value has at most {MAX_VALUE_BYTES} bytes")
    return value


class ProjectSecrets(Repository):
    def __init__(self, store: PostgresEventStore, box: SecretBox) -> None:
        super().__init__(store)
        self.box = box

    async def set(self, project_id: str, name: str, value: str) -> SecretName:
        """Set (or replace) one; checked before anything is written."""
        sealed = self.box.seal(project_id, check_name(name), check_value(value))
        row = await self.pool.fetchrow(Q["set_secret"], project_id, name, sealed, self.box.key_id)
        assert row is not None  # INSERT … RETURNING
        return SecretName.from_row(row)

    async def names(self, project_id: str) -> list[SecretName]:
        return [
            SecretName.from_row(r) for r in await self.pool.fetch(Q["list_secrets"], project_id)
        ]

    async def delete(self, project_id: str, name: str) -> SecretName:
        row = await self.pool.fetchrow(Q["delete_secret"], project_id, name)
        if row is None:
            raise NotFound(f"secret {name!r} not found")
        return SecretName.from_row(row)

    async def environment(self, project_id: str) -> dict[str, str]:
        """Every secret of the project, opened: what its agents get. ``SecretsKeyError``
        if one was sealed with another key."""
        rows = await self.pool.fetch(Q["sealed_secrets"], project_id)
        return {
            r["name"]: self.box.open(project_id, r["name"], bytes(r["sealed"]), r["key_id"])
            for r in rows
        }


async def rotate_key(conn: asyncpg.Connection, old: SecretBox, new: SecretBox) -> int:
    """Re-seal every project secret from ``old`` to ``new`` in one transaction: all of them
    or, if one does not open with ``old``, none. Rows sealed with ``new`` already (a rotation
    run again after a crash) are left as they are. Returns how many were re-sealed."""
    count = 0
    async with conn.transaction():
        for row in await conn.fetch(Q["lock_all_secrets"]):
            if row["key_id"] == new.key_id:
                continue
            project, name = row["project_id"], row["name"]
            value = old.open(project, name, bytes(row["sealed"]), row["key_id"])
            await conn.execute(
                Q["reseal_secret"], project, name, new.seal(project, name, value), new.key_id
            )
            count += 1
    return count
