"""Find the database: the configured URL, or an embedded Postgres under the data dir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from eventstore.embedded import EmbeddedPostgres
from papayya.config import Config


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
