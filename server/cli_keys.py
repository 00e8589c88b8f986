"""``papayya keys create``: an operator's way to a new API key, straight in the database."""

from __future__ import annotations

import asyncio

import asyncpg
import click

from eventstore.migrations import migrate
from papayya.config import Config
from papayya.database import database_url
from papayya.errors import PapayyaError


@click.group()
def keys() -> None:
    """API keys (direct database access, for operators)."""


@keys.command("create")
@click.option("--project", default="default", show_default=True, help="Project name.")
@click.option("--name", default=None, help="A label for the key.")
def create(project: str, name: str | None) -> None:
    """Print a new API key for PROJECT (made if it does not exist). Shown once: only its
    hash is stored."""
    from papayya.readmodels import projects

    if not project.strip() or len(project) > 100:
        raise click.BadParameter("a project name has 1 to 100 characters", param_hint="--project")

    async def go(dsn: str) -> tuple[str, bool]:
        await migrate(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                found = await projects.project_by_name(conn, project)
                made = found is None
                target = found or await projects.create_project(conn, project)
                key = await projects.create_key(conn, target.id, name)
            return key.key, made
        finally:
            await conn.close()

    with database_url(Config.from_env()) as dsn:
        try:
            key, made = asyncio.run(go(dsn))
        except (PapayyaError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
    if made:
        click.echo(f"created project {project!r}", err=True)
    click.echo(key)
