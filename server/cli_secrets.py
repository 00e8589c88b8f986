"""``papayya secrets``: the operator's side of project secrets (docs/security.md): a new
secrets key, and the rotation that re-seals every project secret under it. Setting and
listing secrets is the API's (``POST /v1/projects/{id}/secrets``, the published SDK's
``papayya secrets set``)."""

from __future__ import annotations

import asyncio

import asyncpg
import click

from eventstore.migrations import migrate
from papayya.config import Config
from papayya.database import database_url
from papayya.errors import PapayyaError
from papayya.readmodels.projectsecrets import rotate_key
from papayya.secretbox import KEY_ENV, SecretBox, load_key, new_key, parse_key, write_key_file


@click.group()
def secrets() -> None:
    """Project secrets: the server key that seals them (direct database access)."""


@secrets.command("new-key")
def new_key_command() -> None:
    """Print a fresh secrets key (for PAPAYYA_SECRETS_KEY)."""
    click.echo(new_key())


@secrets.command("rotate-key")
@click.option(
    "--old-key", envvar="PAPAYYA_SECRETS_OLD_KEY", default=None,
    help="The key that sealed them [env PAPAYYA_SECRETS_OLD_KEY; default: PAPAYYA_SECRETS_KEY, "
    "else the data directory's secrets.key].",
)  # fmt: skip
@click.option(
    "--new-key", "new", envvar="PAPAYYA_SECRETS_NEW_KEY", required=True,
    help="The key to seal them with [env PAPAYYA_SECRETS_NEW_KEY] (papayya secrets new-key).",
)  # fmt: skip
def rotate_key_command(old_key: str | None, new: str) -> None:
    """Re-seal every project secret with a new key, in one transaction: all or none.

    Where the old key is the data directory's key file (PAPAYYA_SECRETS_KEY unset), the file
    is replaced by the new key once the transaction has committed. Otherwise set
    PAPAYYA_SECRETS_KEY to the new key on every server and restart them: until then, runs
    of projects with secrets fail to start (they are retried)."""
    config = Config.from_env()
    from_file = not old_key and not config.secrets_key
    try:
        old = SecretBox(load_key(old_key or config.secrets_key, config.data_dir))
        fresh = SecretBox(parse_key(new))
    except PapayyaError as exc:
        raise click.ClickException(str(exc)) from exc

    async def go(dsn: str) -> int:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            return await rotate_key(conn, old, fresh)
        finally:
            await conn.close()

    with database_url(config) as dsn:
        try:
            count = asyncio.run(go(dsn))
        except (PapayyaError, OSError) as exc:
            raise click.ClickException(f"nothing was changed: {exc}") from exc
    click.echo(f"re-sealed {count} project secret(s) with key {fresh.key_id}")
    if from_file:
        path = write_key_file(config.data_dir, new)
        click.echo(f"{path} now holds the new key")
    else:
        click.echo(f"now set {KEY_ENV} to the new key on every server, and restart them")
