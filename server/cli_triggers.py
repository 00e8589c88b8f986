"""``papayya schedules`` and ``papayya webhooks``: triggers through the HTTP API
(``PAPAYYA_BASE_URL``, ``PAPAYYA_API_KEY``)."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import aiohttp
import click

from papayya.apiclient import ApiClient, error_from
from papayya.errors import PapayyaError
from papayya.signing import headers as signed_headers
from papayya.signing import secret_key
from papayya.triggers.policy import CATCHUP_POLICIES, OVERLAP_POLICIES
from papayya.triggers.schemes import SCHEMES
from server.cli_api import echo_json, parse_input, with_api

SECRET_ENV = "PAPAYYA_WEBHOOK_SECRET"


def _options(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _schedule_line(s: dict[str, Any]) -> str:
    state = "enabled" if s["enabled"] else "paused"
    upcoming = s["next_fire_times"][0] if s["next_fire_times"] else "-"
    return (
        f"{s['id']}  {s['agent_id']:<24} {s['cron_expression']:<16} {s['timezone']:<20} "
        f"{state:<8} next {upcoming}"
    )


def _fire_line(f: dict[str, Any]) -> str:
    if f["status"] == "started":
        return f"{f['fire_at']}  started  {f['run_id']}"
    return f"{f['fire_at']}  skipped  {f['reason']}: {f['detail']}"


@click.group()
def schedules() -> None:
    """Cron schedules that start runs of an agent (through the API)."""


_RUN_OPTIONS = [
    click.option("--input", "input_", default=None, help="Each run's input: JSON or text."),
    click.option(
        "--budget-cents",
        "--budget",
        "budget_cents",
        type=click.IntRange(min=0),
        default=None,
        help="Each run's budget in cents.",
    ),
    click.option("--max-steps", type=click.IntRange(min=1), default=None),
    click.option(
        "--overlap",
        type=click.Choice(OVERLAP_POLICIES),
        default=None,
        help="A fire while the previous run is going: skip it (default) or allow it.",
    ),
    click.option(
        "--catchup",
        type=click.Choice(CATCHUP_POLICIES),
        default=None,
        help="Fires missed while no scheduler ran: run the latest (default), all, or none.",
    ),
]


def _run_options(func: Any) -> Any:
    for option in reversed(_RUN_OPTIONS):
        func = option(func)
    return func


@schedules.command("create")
@click.option("--agent", required=True, help="The agent's id or slug.")
@click.option("--cron", required=True, help='5 fields, e.g. "0 9 * * 1-5", or @daily.')
@click.option("--timezone", default="UTC", show_default=True, help="IANA, e.g. Europe/Paris.")
@_run_options
def schedules_create(
    agent: str,
    cron: str,
    timezone: str,
    input_: str | None,
    budget_cents: int | None,
    max_steps: int | None,
    overlap: str | None,
    catchup: str | None,
) -> None:
    """Schedule runs of an agent; prints the schedule with its next fire times."""
    body = _options(
        cron_expression=cron, timezone=timezone, input=parse_input(input_),
        budget_cents=budget_cents, max_steps=max_steps, overlap_policy=overlap,
        catchup_policy=catchup,
    )  # fmt: skip
    echo_json(with_api(lambda c: c.call("POST", f"/v1/agents/{agent}/schedules", body)))


@schedules.command("list")
@click.option("--agent", default=None, help="Only this agent's (id or slug).")
def schedules_list(agent: str | None) -> None:
    """The project's schedules, newest first."""
    found = with_api(lambda c: c.listing("/v1/schedules", {"limit": 200, "agent_id": agent}))
    for schedule in found:
        click.echo(_schedule_line(schedule))


@schedules.command("get")
@click.argument("schedule_id")
def schedules_get(schedule_id: str) -> None:
    """Show a schedule and its next fire times."""
    echo_json(with_api(lambda c: c.call("GET", f"/v1/schedules/{schedule_id}")))


@schedules.command("update")
@click.argument("schedule_id")
@click.option("--cron", default=None)
@click.option("--timezone", default=None)
@_run_options
def schedules_update(
    schedule_id: str,
    cron: str | None,
    timezone: str | None,
    input_: str | None,
    budget_cents: int | None,
    max_steps: int | None,
    overlap: str | None,
    catchup: str | None,
) -> None:
    """Change a schedule; options not given stay as they are."""
    body = _options(
        cron_expression=cron, timezone=timezone, input=parse_input(input_),
        budget_cents=budget_cents, max_steps=max_steps, overlap_policy=overlap,
        catchup_policy=catchup,
    )  # fmt: skip
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    echo_json(with_api(lambda c: c.call("PATCH", f"/v1/schedules/{schedule_id}", body)))


def _set_enabled(schedule_id: str, enabled: bool) -> None:
    body = {"enabled": enabled}
    schedule = with_api(lambda c: c.call("PATCH", f"/v1/schedules/{schedule_id}", body))
    click.echo(_schedule_line(schedule))


@schedules.command("enable")
@click.argument("schedule_id")
def schedules_enable(schedule_id: str) -> None:
    """Resume a paused schedule (fires it missed while paused are not caught up)."""
    _set_enabled(schedule_id, True)


@schedules.command("disable")
@click.argument("schedule_id")
def schedules_disable(schedule_id: str) -> None:
    """Pause a schedule."""
    _set_enabled(schedule_id, False)


@schedules.command("delete")
@click.argument("schedule_id")
def schedules_delete(schedule_id: str) -> None:
    """Delete a schedule and its fires (its runs stay)."""
    deleted = with_api(lambda c: c.call("DELETE", f"/v1/schedules/{schedule_id}"))
    click.echo(f"deleted {deleted['id']}")


@schedules.command("fires")
@click.argument("schedule_id")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
def schedules_fires(schedule_id: str, limit: int) -> None:
    """A schedule's latest fires: the run each started, or why it was skipped."""
    found = with_api(
        lambda c: c.listing(f"/v1/schedules/{schedule_id}/fires", {"limit": limit}, most=limit)
    )
    for fire in found:
        click.echo(_fire_line(fire))


@click.group()
def webhooks() -> None:
    """Signed webhooks that start runs of an agent (through the API)."""


@webhooks.command("create")
@click.option("--agent", required=True, help="The agent's id or slug.")
@click.option("--name", required=True)
@click.option("--description", default=None)
@click.option("--rate-limit", type=click.IntRange(1, 100_000), default=None,
              help="Accepted calls per minute (default 60).")  # fmt: skip
@click.option(
    "--scheme",
    type=click.Choice(SCHEMES),
    default=None,
    help="How the sender signs its calls (default standard; docs/webhooks.md).",
)
@click.option("--secret", "secret_env", metavar="ENV", default=None,
              help="The name of a variable holding the sender's own secret (Stripe's or "
                   "Slack's signing secret); else one is made.")  # fmt: skip
def webhooks_create(
    agent: str, name: str, description: str | None, rate_limit: int | None,
    scheme: str | None, secret_env: str | None,
) -> None:  # fmt: skip
    """Create a webhook; prints it with its secret, which is shown only this once."""
    body = _options(
        name=name, description=description, rate_limit_per_minute=rate_limit, scheme=scheme,
        secret=_sender_secret(secret_env),
    )  # fmt: skip
    echo_json(with_api(lambda c: c.call("POST", f"/v1/agents/{agent}/webhooks", body)))
    click.echo("Keep the secret: it is not shown again (rotate it to get a new one).", err=True)


def _sender_secret(env: str | None) -> str | None:
    """Read from a variable, never from the command line (shell history, ``ps``)."""
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise click.UsageError(f"--secret {env}: that variable is not set")
    return value


@webhooks.command("update")
@click.argument("webhook_id")
@click.option("--name", default=None)
@click.option("--description", default=None)
@click.option("--rate-limit", type=click.IntRange(1, 100_000), default=None)
@click.option("--scheme", type=click.Choice(SCHEMES), default=None)
@click.option("--secret", "secret_env", metavar="ENV", default=None,
              help="The name of a variable holding the sender's new secret.")  # fmt: skip
def webhooks_update(
    webhook_id: str, name: str | None, description: str | None, rate_limit: int | None,
    scheme: str | None, secret_env: str | None,
) -> None:  # fmt: skip
    """Change a webhook: its scheme, or the secret its sender gave (Stripe, Slack)."""
    body = _options(
        name=name, description=description, rate_limit_per_minute=rate_limit, scheme=scheme,
        secret=_sender_secret(secret_env),
    )  # fmt: skip
    echo_json(with_api(lambda c: c.call("PATCH", f"/v1/webhooks/{webhook_id}", body)))


@webhooks.command("list")
@click.option("--agent", required=True, help="The agent's id or slug.")
def webhooks_list(agent: str) -> None:
    """An agent's webhooks (without secrets)."""
    for hook in with_api(lambda c: c.listing(f"/v1/agents/{agent}/webhooks", {"limit": 200})):
        click.echo(f"{hook['id']}  {hook['name']:<24} {hook['scheme']:<8} {hook['trigger_url']}")


@webhooks.command("delete")
@click.argument("webhook_id")
def webhooks_delete(webhook_id: str) -> None:
    """Delete a webhook: its URL stops working at once."""
    deleted = with_api(lambda c: c.call("DELETE", f"/v1/webhooks/{webhook_id}"))
    click.echo(f"deleted {deleted['id']}")


@webhooks.command("rotate")
@click.argument("webhook_id")
def webhooks_rotate(webhook_id: str) -> None:
    """A new secret for a webhook (the old one stops working); prints it once."""
    echo_json(with_api(lambda c: c.call("POST", f"/v1/webhooks/{webhook_id}/rotate-secret")))


@webhooks.command("test")
@click.argument("webhook_id")
@click.option("--secret", default=None, help=f"The whsec_ secret (or set {SECRET_ENV}).")
@click.option("--data", default="{}", show_default=True, help="The body: JSON, or text.")
def webhooks_test(webhook_id: str, secret: str | None, data: str) -> None:
    """Send a correctly signed call to a webhook and print the run it started."""
    secret = secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise click.UsageError(f"give the webhook's secret: --secret whsec_… or {SECRET_ENV}")
    try:
        secret_key(secret)
    except ValueError as exc:
        raise click.UsageError(f"--secret: {exc}") from None
    body = data.encode()
    try:
        json.loads(data)
        kind = "application/json"
    except ValueError:
        kind = "text/plain; charset=utf-8"
    headers = {**signed_headers(secret, f"msg_{uuid.uuid4().hex}", body), "Content-Type": kind}

    async def go(client: ApiClient) -> Any:
        url = f"{client.base_url}/v1/webhooks/{webhook_id}/trigger"
        try:
            async with client.session.post(url, data=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise error_from(resp.status, answer)
        except aiohttp.ClientError as exc:
            raise PapayyaError(f"cannot reach {client.base_url}: {exc}") from None
        return await client.call("GET", f"/v1/runs/{answer['run_id']}")

    echo_json(with_api(go))
