"""Find the database (the configured URL, or an embedded Postgres under the data dir), and
the secrets a server makes for itself in it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from eventstore.embedded import EmbeddedPostgres
from papayya.config import Config
from sql import queries

Q: Final = queries("control.sql")


@contextmanager
def database_url(config: Config) -> Iterator[str]:
    """Yield a DSN; an embedded server started here is stopped on exit."""
    if config.database_url:
        yield config.database_url
        return
    embedded = EmbeddedPostgres(config.data_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()


async def server_secret(pool: Any, name: str = "run_tokens") -> bytes:
    """A secret made once per database and shared by every server process using it."""
    value = await pool.fetchval(Q["secret"], name)
    if value is None:
        await pool.execute(Q["create_secret"], name, secrets.token_bytes(32))
        value = await pool.fetchval(Q["secret"], name)
    return bytes(value)
