"""``papayya projects`` and ``papayya rate-card``: the caller's project, its run defaults and
its prices, through the API (``PAPAYYA_BASE_URL``, ``PAPAYYA_API_KEY``). Without
``PAPAYYA_BASE_URL``, ``papayya projects`` works on the database, as the SDK's direct mode
does: the project ``PAPAYYA_PROJECT`` names, else ``default``."""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from typing import Any

import click

from eventstore.postgres import PostgresEventStore
from papayya.apiclient import ApiClient
from papayya.readmodels.projects import Project, get_project, set_defaults
from server.cli_api import api_mode, echo_json, with_api
from server.cli_runs import with_store

NO_LIMIT = "none"
PRICE_FIELDS = ("input_per_million_usd", "output_per_million_usd", "cached_input_per_million_usd")


async def own_project(client: ApiClient) -> dict[str, Any]:
    """The project the API key belongs to."""
    listed = await client.call("GET", "/v1/projects")
    return dict(listed[0])


def limit(value: str, name: str, least: int) -> int | None:
    """A limit option: a whole number from ``least``, or ``none`` (no limit)."""
    if value.strip().lower() == NO_LIMIT:
        return None
    try:
        number = int(value)
    except ValueError:
        number = least - 1
    if number < least:
        raise click.BadParameter(f"a whole number from {least}, or {NO_LIMIT}", param_hint=name)
    return number


@click.group()
def projects() -> None:
    """The caller's project and the defaults of its runs (through the API)."""


def project_out(project: Project) -> dict[str, Any]:
    """A project from the database as ``GET /v1/projects/{id}`` shows it."""
    return {
        "id": project.id,
        "name": project.name,
        "created_at": project.created_at.isoformat(),
        "slug": project.slug,
        "default_budget_cents": project.defaults.budget_cents,
        "default_max_steps": project.defaults.max_steps,
    }


async def local_defaults(
    store: PostgresEventStore, changes: dict[str, int | None]
) -> dict[str, Any]:
    """The direct-mode project (made if the database has none), ``changes`` applied first."""
    from papayya.sdk.direct import local_project

    project_id = await local_project(store.pool, os.environ.get("PAPAYYA_PROJECT"))
    async with store.pool.acquire() as conn, conn.transaction():
        if changes:
            await set_defaults(conn, project_id, changes)
        return project_out(await get_project(conn, project_id))


@projects.command("show")
def show() -> None:
    """Print the project, with default_budget_cents and default_max_steps (null: no limit)."""
    if api_mode():
        echo_json(with_api(own_project))
    else:
        echo_json(with_store(lambda store: local_defaults(store, {})))


@projects.command("defaults")
@click.option("--budget-cents", help=f"Budget of runs that state none, or {NO_LIMIT}.")
@click.option("--max-steps", help=f"Step limit of runs that state none, or {NO_LIMIT}.")
def defaults(budget_cents: str | None, max_steps: str | None) -> None:
    """Set the limits a run gets when neither it nor its agent states one. A new project has
    500 cents and 50 steps; `none` lifts a limit (an explicit choice, never the default)."""
    body: dict[str, int | None] = {}
    if budget_cents is not None:
        body["default_budget_cents"] = limit(budget_cents, "--budget-cents", 0)
    if max_steps is not None:
        body["default_max_steps"] = limit(max_steps, "--max-steps", 1)
    if not body:
        raise click.UsageError("give --budget-cents and/or --max-steps")

    async def go(client: ApiClient) -> Any:
        project = await own_project(client)
        return await client.call("PATCH", f"/v1/projects/{project['id']}", body)

    if api_mode():
        echo_json(with_api(go))
    else:
        changes = {name.removeprefix("default_"): value for name, value in body.items()}
        echo_json(with_store(lambda store: local_defaults(store, changes)))


@click.group("rate-card")
def rate_card() -> None:
    """The project's own model prices, which win over the maintained price table."""


@rate_card.command("show")
def rate_card_show() -> None:
    """Print the rate card: {model: prices per million tokens, in USD and in cents}."""

    async def go(client: ApiClient) -> Any:
        project = await own_project(client)
        return await client.call("GET", f"/v1/projects/{project['id']}/rate-card")

    echo_json(with_api(go))


def usd(value: str, name: str) -> str:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise click.BadParameter("a price in USD per million tokens, e.g. 2.50", param_hint=name)
    return format(amount, "f")


@rate_card.command("set")
@click.argument("model")
@click.option("--input-per-million", required=True, help="USD per million input tokens.")
@click.option("--output-per-million", required=True, help="USD per million output tokens.")
def rate_card_set(model: str, input_per_million: str, output_per_million: str) -> None:
    """Price MODEL (the card's other models kept): runs with a budget may then call it."""
    price = {
        "input_per_million_usd": usd(input_per_million, "--input-per-million"),
        "output_per_million_usd": usd(output_per_million, "--output-per-million"),
    }

    async def go(client: ApiClient) -> Any:
        project = await own_project(client)
        url = f"/v1/projects/{project['id']}/rate-card"
        card = await client.call("GET", url)
        kept = {m: {k: e[k] for k in PRICE_FIELDS if e.get(k)} for m, e in card.items()}
        return await client.call("PUT", url, {**kept, model: price})

    echo_json(with_api(go))
