"""``papayya projections …`` (status, rebuild) and ``papayya projector`` (run them live)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import click

from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.database import database_url
from papayya.errors import PapayyaError
from projections import PROJECTION_NAMES, Projections

T = TypeVar("T")


def with_projections(
    action: Callable[[Projections], Awaitable[T]], config: Config | None = None
) -> T:
    """Run ``action`` on the configured database; failures become one-line CLI errors."""

    async def go(dsn: str) -> T:
        store = await PostgresEventStore.connect(dsn, min_size=1, max_size=8)
        try:
            return await action(Projections(store, dsn))
        finally:
            await store.close()

    with database_url(config or Config.from_env()) as dsn:
        try:
            return asyncio.run(go(dsn))
        except asyncpg.UndefinedTableError as exc:
            raise click.ClickException(f"{exc}: run `papayya db migrate` first") from exc
        except (PapayyaError, OSError, asyncpg.PostgresError) as exc:
            raise click.ClickException(str(exc)) from exc


@click.group()
def projections() -> None:
    """Read models (runs, steps, costs): status and rebuild."""


@projections.command()
def status() -> None:
    """Each projection's checkpoint and how far behind it is. A projector that cannot get
    past an event is shown FAILING with that event, and the command exits with status 1."""
    rows = with_projections(lambda p: p.status())
    for row in rows:
        updated = row.updated_at.isoformat(timespec="seconds") if row.updated_at else "never"
        click.echo(
            f"{row.name:<8} checkpoint {row.cursor or '-':<24} "
            f"updated {updated:<25} lag {row.lag_seconds:.3f}s"
        )
        if row.failure is not None:
            click.echo(f"         FAILING: {row.failure.describe()}")
    if any(row.failure is not None for row in rows):
        raise SystemExit(1)


@projections.command()
@click.argument("name", required=False, type=click.Choice(PROJECTION_NAMES))
def rebuild(name: str | None) -> None:
    """Rebuild NAME (every projection if omitted) from the first event, then swap it in.

    Running projectors keep serving the old tables until the swap."""
    results = with_projections(lambda p: p.rebuild(name))
    for result in results:
        click.echo(f"rebuilt {result.name}: {result.events} events, checkpoint {result.cursor}")


@click.command()
def projector() -> None:
    """Run every projector, following new events, until SIGINT or SIGTERM
    (PAPAYYA_DATABASE_URL: the Postgres the other parts share)."""
    from eventstore.migrations import migrate
    from server.cli_serve import required
    from server.startup import log_to

    config = Config.from_env()
    required(config, "projector", redis=False)
    log_to(config, "projector")

    async def serve(service: Projections) -> None:
        await migrate(service.dsn)  # a service start, like `papayya server`
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        click.echo(f"projecting {', '.join(service.runners)}; stop with Ctrl-C")
        await service.run()

    with_projections(serve, config)
    click.echo("projector stopped")
