"""The ``papayya`` command line."""

from __future__ import annotations

import asyncio
import sys

import click

from papayya import __version__
from papayya.config import Config
from papayya.database import database_url
from server.cli_api import agents, run
from server.cli_deploy import deploy
from server.cli_dev import dev
from server.cli_keys import keys
from server.cli_projections import projections, projector
from server.cli_projects import projects, rate_card
from server.cli_runs import runs
from server.cli_secrets import secrets
from server.cli_serve import api, scheduler, server, worker
from server.cli_triggers import schedules, webhooks


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="papayya")
def main() -> None:
    """Papayya: durable execution and cost control for AI agents.

    \b
    Server side (papayya server, db, runs in direct mode):
      PAPAYYA_DATABASE_URL   Postgres (unset: papayya server starts an embedded one under
                             PAPAYYA_DATA_DIR; api, worker, scheduler, projector refuse)
      PAPAYYA_REDIS_URL      Redis, the run queue (unset: the same, with an embedded Redis)
      PAPAYYA_DATA_DIR       default .papayya/ (one papayya server per data directory)
      PAPAYYA_LOG_FILE       default <data dir>/logs/<command>.log (-: stderr only);
                             stderr gets warnings only
      PAPAYYA_LOG_LEVEL      the log's level (info)
      PAPAYYA_OPENAI_BASE_URL, PAPAYYA_OPENAI_API_KEY,
      PAPAYYA_ANTHROPIC_BASE_URL, PAPAYYA_ANTHROPIC_API_KEY   where the LLM gateway forwards
      PAPAYYA_GATEWAY_TIMEOUT_SECONDS   the longest a model call may take (default, max 600)
      PAPAYYA_BOOTSTRAP_API_KEY   the first project's API key (else one is printed once):
                             cpk_ then letters, digits, _ or -, 20 to 200 characters
      PAPAYYA_METRICS_TOKEN   serve /metrics to Authorization: Bearer <token> (else 404)
      PAPAYYA_METRICS_LISTEN  host:port: serve /metrics there, without a token
      PAPAYYA_PROCESS_RUNTIME     whose agents may run as local processes: off (default),
                                  all (single-user machine), projects:<id>,<id>
      PAPAYYA_SECRETS_KEY    seals project secrets (papayya secrets new-key; unset: made
                             once in PAPAYYA_DATA_DIR/secrets.key, mode 0600)
    Client side (agents, run, runs through the API, the SDK's HTTP mode):
      PAPAYYA_BASE_URL, PAPAYYA_API_KEY
    """


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


main.add_command(server)
main.add_command(api)
main.add_command(worker)
main.add_command(scheduler)
main.add_command(runs)
main.add_command(agents)
main.add_command(run)
main.add_command(dev)
main.add_command(deploy)
main.add_command(keys)
main.add_command(projections)
main.add_command(projector)
main.add_command(schedules)
main.add_command(webhooks)
main.add_command(secrets)
main.add_command(projects)
main.add_command(rate_card)


if __name__ == "__main__":
    sys.exit(main())
