"""A project's callback signing secret (``whsec_…``), kept in ``project_secrets``.

Below both ``web/`` (which shows and rotates it) and ``workers/`` (whose deliverer signs
with it), so neither imports the other for it.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from papayya import signing
from sql import queries

# The queries sit in workers.sql beside the rest of the callbacks' SQL.
Q: Final = queries("workers.sql")
SECRET_NAME: Final = "callbacks"


async def project_secret(pool: asyncpg.Pool, project_id: str, rotate: bool = False) -> str:
    """The project's callback signing secret (``whsec_…``), made on first use."""
    if rotate:
        fresh = signing.new_secret()
        await pool.execute(Q["replace_project_secret"], project_id, SECRET_NAME, fresh.encode())
        return fresh
    value = await pool.fetchval(Q["project_secret"], project_id, SECRET_NAME)
    if value is None:
        await pool.execute(
            Q["create_project_secret"], project_id, SECRET_NAME, signing.new_secret().encode()
        )
        value = await pool.fetchval(Q["project_secret"], project_id, SECRET_NAME)
    return bytes(value).decode()
