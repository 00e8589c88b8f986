"""The ``papayya`` command line."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from papayya import __version__
from papayya.cli_api import agents, run
from papayya.cli_dev import dev
from papayya.cli_keys import keys
from papayya.cli_projections import projections, projector
from papayya.cli_runs import runs
from papayya.config import Config
from papayya.database import database_url


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="papayya")
def main() -> None:
    """Papayya: durable execution and cost control for AI agents.

    \b
    Server side (papayya server, db, runs in direct mode):
      PAPAYYA_DATABASE_URL   Postgres (unset: an embedded one under PAPAYYA_DATA_DIR)
      PAPAYYA_DATA_DIR       default .papayya/
      PAPAYYA_OPENAI_BASE_URL, PAPAYYA_OPENAI_API_KEY,
      PAPAYYA_ANTHROPIC_BASE_URL, PAPAYYA_ANTHROPIC_API_KEY   where the LLM gateway forwards
      PAPAYYA_BOOTSTRAP_API_KEY   the first project's API key (else one is printed once)
    Client side (agents, run, runs through the API, the SDK's HTTP mode):
      PAPAYYA_BASE_URL, PAPAYYA_API_KEY
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def server(host: str, port: int) -> None:
    """Migrate the database and serve the control plane (GET /healthz)."""
    from aiohttp import web

    from web.app import init_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = Config.from_env(host=host, port=port)
    with database_url(config) as dsn:
        click.echo(f"papayya {__version__} listening on http://{host}:{port}")
        web.run_app(init_app(config, dsn), host=host, port=port, print=None)


@main.group()
def db() -> None:
    """Database administration."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations."""
    from eventstore.migrations import migrate

    config = Config.from_env()
    with database_url(config) as dsn:
        try:
            applied = asyncio.run(migrate(dsn))
        except OSError as exc:
            raise click.ClickException(f"cannot reach the database: {exc}") from exc
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("schema is up to date")


main.add_command(runs)
main.add_command(agents)
main.add_command(run)
main.add_command(dev)
main.add_command(keys)
main.add_command(projections)
main.add_command(projector)


if __name__ == "__main__":
    sys.exit(main())
