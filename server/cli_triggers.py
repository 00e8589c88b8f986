"""``papayya schedules`` and ``papayya webhooks``: triggers through the HTTP API
(``PAPAYYA_BASE_URL``, ``PAPAYYA_API_KEY``)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import click

from papayya.apiclient import ApiClient, error_from
from papayya.errors import PapayyaError
from papayya.signing import headers as signed_headers
from papayya.signing import secret_key
from papayya.triggers.policy import CATCHUP_POLICIES, OVERLAP_POLICIES
from papayya.triggers.schemes import SCHEMES
from server.cli_api import agent_slugs, echo_json, parse_input, with_api, with_slug
from server.cli_options import budget_options, whole_cents
from server.cli_runs import table

SECRET_ENV = "PAPAYYA_WEBHOOK_SECRET"


async def _named(client: ApiClient, method: str, path: str, body: Any = None) -> Any:
    """An API object as the CLI prints it: with its agent's slug (``with_slug``)."""
    return await with_slug(client, await client.call(method, path, body))


def _options(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# One rule for every schedules view: times are shown in one zone, UTC unless --tz names
# another, and the zone is named (in the header, or by each time's offset in JSON). A
# schedule's own timezone is where its cron is read, and is shown as such.
TIME_FIELDS = ("last_fire_at", "created_at", "updated_at")


def _zone(ctx: click.Context, param: click.Parameter, value: str) -> ZoneInfo:
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown timezone {value!r} (an IANA name, e.g. UTC)") from None


_tz_option = click.option(
    "--tz", "zone", default="UTC", show_default=True, callback=_zone,
    help="Show times in this zone (IANA name, e.g. Europe/Paris).",
)  # fmt: skip


def _at(value: str | None, zone: ZoneInfo) -> str:
    """An API time in ``zone``, to the second, without the offset (the header names it)."""
    if value is None:
        return "-"
    return datetime.fromisoformat(value).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _in_zone(schedule: dict[str, Any], zone: ZoneInfo) -> dict[str, Any]:
    """A schedule as the API gave it, with every time in ``zone`` (ISO 8601, offset kept)."""

    def moved(value: str | None) -> str | None:
        return None if value is None else datetime.fromisoformat(value).astimezone(zone).isoformat()

    out = dict(schedule)
    out["next_fire_times"] = [moved(t) for t in schedule.get("next_fire_times") or []]
    for name in TIME_FIELDS:
        if name in out:
            out[name] = moved(out[name])
    return out


def _schedule_rows(found: list[dict[str, Any]], slugs: dict[str, str], zone: ZoneInfo) -> str:
    rows = [
        (
            s["id"],
            slugs.get(s["agent_id"], s["agent_id"]),
            s["cron_expression"],
            s["timezone"],
            "enabled" if s["enabled"] else "paused",
            _at(s["next_fire_times"][0] if s["next_fire_times"] else None, zone),
            _at(s.get("last_fire_at"), zone),
        )
        for s in found
    ]
    headers = ("schedule", "agent", "cron", "cron zone", "state", f"next ({zone.key})",
               f"last ({zone.key})")  # fmt: skip
    return table(headers, rows)


def _fire_row(f: dict[str, Any], zone: ZoneInfo) -> tuple[str, ...]:
    if f["status"] == "started":
        return (_at(f["fire_at"], zone), "started", f["run_id"])
    return (_at(f["fire_at"], zone), "skipped", f"{f['reason']}: {f['detail']}")


@click.group()
def schedules() -> None:
    """Cron schedules that start runs of an agent (through the API)."""


_RUN_OPTIONS = [
    click.option("--input", "input_", default=None, help="Each run's input, as JSON."),
    budget_options("Each run's budget (default: the agent's)"),
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
@click.option("--timezone", default="UTC", show_default=True,
              help="The zone the cron is read in (IANA, e.g. Europe/Paris).")  # fmt: skip
@_run_options
@_tz_option
def schedules_create(
    agent: str,
    cron: str,
    timezone: str,
    input_: str | None,
    budget_usd: Decimal | None,
    max_steps: int | None,
    overlap: str | None,
    catchup: str | None,
    zone: ZoneInfo,
) -> None:
    """Schedule runs of an agent; prints the schedule with its next fire times (in UTC, or
    the zone --tz names)."""
    body = _options(
        cron_expression=cron, timezone=timezone, input=parse_input(input_),
        budget_cents=whole_cents(budget_usd), max_steps=max_steps, overlap_policy=overlap,
        catchup_policy=catchup,
    )  # fmt: skip
    made = with_api(lambda c: _named(c, "POST", f"/v1/agents/{agent}/schedules", body))
    echo_json(_in_zone(made, zone))


@schedules.command("list")
@click.option("--agent", default=None, help="Only this agent's (id or slug).")
@_tz_option
def schedules_list(agent: str | None, zone: ZoneInfo) -> None:
    """The project's schedules, newest first, their times in one zone (UTC unless --tz)."""

    async def go(c: ApiClient) -> tuple[list[Any], dict[str, str]]:
        found = await c.listing("/v1/schedules", {"limit": 200, "agent_id": agent})
        return found, await agent_slugs(c)

    found, slugs = with_api(go)
    click.echo(_schedule_rows(found, slugs, zone))


@schedules.command("get")
@click.argument("schedule_id")
@_tz_option
def schedules_get(schedule_id: str, zone: ZoneInfo) -> None:
    """Show a schedule and its next fire times (in UTC, or the zone --tz names)."""
    echo_json(_in_zone(with_api(lambda c: _named(c, "GET", f"/v1/schedules/{schedule_id}")), zone))


@schedules.command("update")
@click.argument("schedule_id")
@click.option("--cron", default=None)
@click.option("--timezone", default=None, help="The zone the cron is read in.")
@_run_options
@_tz_option
def schedules_update(
    schedule_id: str,
    cron: str | None,
    timezone: str | None,
    input_: str | None,
    budget_usd: Decimal | None,
    max_steps: int | None,
    overlap: str | None,
    catchup: str | None,
    zone: ZoneInfo,
) -> None:
    """Change a schedule; options not given stay as they are."""
    body = _options(
        cron_expression=cron, timezone=timezone, input=parse_input(input_),
        budget_cents=whole_cents(budget_usd), max_steps=max_steps, overlap_policy=overlap,
        catchup_policy=catchup,
    )  # fmt: skip
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    changed = with_api(lambda c: _named(c, "PATCH", f"/v1/schedules/{schedule_id}", body))
    echo_json(_in_zone(changed, zone))


def _set_enabled(schedule_id: str, enabled: bool, zone: ZoneInfo) -> None:
    body = {"enabled": enabled}

    async def go(c: ApiClient) -> tuple[Any, dict[str, str]]:
        changed = await c.call("PATCH", f"/v1/schedules/{schedule_id}", body)
        return changed, await agent_slugs(c)

    schedule, slugs = with_api(go)
    click.echo(_schedule_rows([schedule], slugs, zone))


@schedules.command("enable")
@click.argument("schedule_id")
@_tz_option
def schedules_enable(schedule_id: str, zone: ZoneInfo) -> None:
    """Resume a paused schedule (fires it missed while paused are not caught up)."""
    _set_enabled(schedule_id, True, zone)


@schedules.command("disable")
@click.argument("schedule_id")
@_tz_option
def schedules_disable(schedule_id: str, zone: ZoneInfo) -> None:
    """Pause a schedule."""
    _set_enabled(schedule_id, False, zone)


@schedules.command("delete")
@click.argument("schedule_id")
def schedules_delete(schedule_id: str) -> None:
    """Delete a schedule and its fires (its runs stay)."""
    deleted = with_api(lambda c: c.call("DELETE", f"/v1/schedules/{schedule_id}"))
    click.echo(f"deleted {deleted['id']}")


@schedules.command("fires")
@click.argument("schedule_id")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@_tz_option
def schedules_fires(schedule_id: str, limit: int, zone: ZoneInfo) -> None:
    """A schedule's latest fires: the run each started, or why it was skipped (times in UTC,
    or the zone --tz names)."""
    found = with_api(
        lambda c: c.listing(f"/v1/schedules/{schedule_id}/fires", {"limit": limit}, most=limit)
    )
    rows = [_fire_row(fire, zone) for fire in found]
    click.echo(table((f"fire at ({zone.key})", "status", "run / reason"), rows))


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
    echo_json(with_api(lambda c: _named(c, "POST", f"/v1/agents/{agent}/webhooks", body)))
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
    echo_json(with_api(lambda c: _named(c, "PATCH", f"/v1/webhooks/{webhook_id}", body)))


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
        return await _named(client, "GET", f"/v1/runs/{answer['run_id']}")

    echo_json(with_api(go))
