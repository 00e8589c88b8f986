"""CLI commands that talk to the HTTP API (``PAPAYYA_BASE_URL``, ``PAPAYYA_API_KEY``)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click

from papayya.apiclient import ApiClient
from papayya.domain.bounds import MAX_TIMEOUT_SECONDS
from papayya.errors import NotFound, PapayyaError, Unauthorized
from server.cli_options import budget_options, parse_json_input, whole_cents

T = TypeVar("T")
DEFAULT_BASE_URL = "http://127.0.0.1:8080"


def api_mode() -> bool:
    return bool(os.environ.get("PAPAYYA_BASE_URL"))


def with_api(action: Callable[[ApiClient], Awaitable[T]]) -> T:
    base = os.environ.get("PAPAYYA_BASE_URL") or DEFAULT_BASE_URL
    key = os.environ.get("PAPAYYA_API_KEY")
    if not key:
        raise click.ClickException("set PAPAYYA_API_KEY (the key `papayya server` printed)")

    async def go() -> T:
        async with ApiClient(base, key) as client:
            return await action(client)

    try:
        return asyncio.run(go())
    except PapayyaError as exc:
        raise click.ClickException(exc.message) from exc


def parse_input(raw: str | None, option: str = "--input") -> Any:
    """``--input`` as JSON; anything else is a usage error before anything is sent."""
    return parse_json_input(raw, option)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def step_line(step: dict[str, Any]) -> str:
    what = step.get("label") or step.get("model") or ""
    return (
        f"step {step['step_number']:>3}  {step['step_type']:<10} {what:<24} "
        f"{step['status']:<9} {step['duration_ms']:>8.1f} ms  "
        f"in {step['input_tokens']:>6}  out {step['output_tokens']:>6}  ${step['cost_usd']}"
    )


async def follow(
    client: ApiClient,
    run_id: str,
    answer: bool = False,
    ended: Callable[[], Awaitable[None]] | None = None,
    output: Callable[[dict[str, Any]], None] | None = None,
    printed: set[int] | None = None,
) -> str:
    """Print each step once, when it ends, until the run is terminal; returns its status.
    The stream sends a step again when it changes after it ended (a tool that ran after its
    model call): that is not printed twice. While no step comes and the run's worker lease is
    no longer renewed, say so (``watch_lease``). ``answer``: print the run's output (or
    error) before the last line; ``ended``: print the end its own way instead; ``output``:
    what to do with the agent's output lines as the worker records them (event ``output``;
    ignored without it); ``printed``: the numbers of steps printed already."""
    status = "unknown"
    printed = set() if printed is None else printed
    quiet = Quiet()
    watcher = asyncio.create_task(watch_lease(run_id, quiet, lambda: run_lease(client, run_id)))
    try:
        async for event, _id, data in client.sse(f"/v1/runs/{run_id}/events"):
            quiet.touch()
            if event == "step":
                if data["step_number"] not in printed:
                    printed.add(data["step_number"])
                    click.echo(step_line(data))
            elif event == "output":
                if output is not None:
                    output(data)
            elif event == "terminal":
                status = str(data.get("status"))
                if ended is not None:
                    await ended()
                    break
                if answer:
                    await print_answer(client, run_id)
                click.echo(f"run {run_id} {status}")
                break
            elif event == "error":  # the server ended the stream: its API key was revoked
                raise Unauthorized(str((data.get("error") or {}).get("message") or "unauthorized"))
    finally:
        watcher.cancel()
    return status


class Quiet:
    """How long a followed run has gone without news."""

    def __init__(self) -> None:
        self.since = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.since = asyncio.get_running_loop().time()

    def seconds(self) -> float:
        return asyncio.get_running_loop().time() - self.since


LEASE_POLL_SECONDS = 1.0
LEASE_QUIET_SECONDS = 2.0  # no step for this long: look at the lease
LEASE_REPEAT_SECONDS = 5.0  # the countdown's line at most this often


LeaseLook = Callable[[], Awaitable[tuple[str, dict[str, Any] | None]]]


async def run_lease(client: ApiClient, run_id: str) -> tuple[str, dict[str, Any] | None]:
    """The run's status and its worker's lease (``RunOut.lease``), through the API."""
    run = await client.call("GET", f"/v1/runs/{run_id}")
    return str(run.get("status")), run.get("lease")


async def watch_lease(run_id: str, quiet: Quiet, look: LeaseLook) -> None:
    """While the run is quiet, running, and its worker's lease is no longer renewed (the
    worker was killed, or lost the database), print "waiting for the lease (N s)", counting
    down to the lease's expiry, after which the recovery sweeper queues the run again."""
    loop = asyncio.get_running_loop()
    shown_at: float | None = None
    waiting = False
    while True:
        await asyncio.sleep(LEASE_POLL_SECONDS)
        if quiet.seconds() < LEASE_QUIET_SECONDS:
            continue
        try:
            status, lease = await look()
        except (PapayyaError, OSError):
            continue  # the stream reports what matters; this is only a hint
        if waiting and status == "queued":
            click.echo(f"the lease expired: run {run_id} is queued again for a new attempt")
            waiting = False
            continue
        if status != "running" or not lease or not lease_stale(lease):
            continue
        now = loop.time()
        if shown_at is not None and now - shown_at < LEASE_REPEAT_SECONDS:
            continue
        left = max(0, math.ceil(float(lease["expires_in_seconds"])))
        note = "" if left else ": it expired, the run is recovered at the next sweep"
        click.echo(f"waiting for the lease ({left} s){note}")
        shown_at, waiting = now, True


def lease_stale(lease: dict[str, Any]) -> bool:
    """A lease not renewed for half its length: its worker renews it every heartbeat."""
    ago = float(lease["renewed_seconds_ago"])
    return ago > (float(lease["expires_in_seconds"]) + ago) / 2


async def print_answer(client: ApiClient, run_id: str) -> None:
    """The run's output (a string as is, anything else as JSON), or its error."""
    done = await client.call("GET", f"/v1/runs/{run_id}")
    output = done.get("output")
    if done.get("status") == "completed" and output is not None:
        click.echo(output if isinstance(output, str) else json.dumps(output, indent=2))
    elif done.get("error_message"):
        click.echo(f"{done.get('error_code')}: {done['error_message']}")


# A run's time limit (papayya.domain.timelimit), as the API bounds it.
TIMEOUT = click.IntRange(1, MAX_TIMEOUT_SECONDS)
TIMEOUT_HELP = (
    "Seconds a run may take from its start, across retries (1 to 604800); then it ends "
    "failed with code timeout. Unset: the agent's, else the project's default (3600)."
)
AGENT_TIMEOUT_HELP = (
    "Seconds each run may take from its start, across retries (1 to 604800), unless the "
    "run sets its own; then it ends failed with code timeout. Unset: the project's default "
    "(3600)."
)


@click.group()
def agents() -> None:
    """Create and inspect agents (through the API)."""


@agents.command("create")
@click.option("--name", required=True)
@click.option("--slug", required=True, help="Short unique name, used in URLs and `papayya run`.")
@click.option("--model", default=None)
@click.option("--instructions", default=None)
@click.option("--max-steps", type=click.IntRange(min=1), default=None)
@budget_options("Each run's budget, unless the run sets one")
@click.option(
    "--tool-url", "tool_urls", multiple=True,
    help="An HTTP tool, [NAME=]URL: the built-in loop POSTs its arguments there (repeatable).",
)  # fmt: skip
@click.option("--mcp", "mcp_urls", multiple=True, help="An MCP server's URL (repeatable).")
@click.option("--output-schema", default=None, help="JSON Schema the answer must satisfy.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=None)
@click.option("--timeout", "timeout_seconds", type=TIMEOUT, default=None, help=AGENT_TIMEOUT_HELP)
def agents_create(
    name: str,
    slug: str,
    model: str | None,
    instructions: str | None,
    max_steps: int | None,
    budget_usd: Decimal | None,
    tool_urls: tuple[str, ...],
    mcp_urls: tuple[str, ...],
    output_schema: str | None,
    temperature: float | None,
    timeout_seconds: int | None,
) -> None:
    """Create an agent. With --model and no deployment, its runs use the built-in loop."""
    config = agent_config(
        model, instructions, max_steps, budget_usd,
        temperature=temperature,
        timeout_seconds=timeout_seconds,
        output_schema=parse_input(output_schema, "--output-schema"),
        tools=[http_tool(t) for t in tool_urls] or None,
        mcp_servers=[{"url": u} for u in mcp_urls] or None,
    )  # fmt: skip
    body = {"name": name, "slug": slug, "config": config}
    echo_json(with_api(lambda c: c.call("POST", "/v1/agents", body)))


def agent_config(
    model: str | None,
    instructions: str | None,
    max_steps: int | None,
    budget_usd: Decimal | None,
    **more: Any,
) -> dict[str, Any]:
    """An agent's ``config`` from the options given (those not given are left out)."""
    given = {
        "model": model,
        "instructions": instructions,
        "max_steps": max_steps,
        "budget_usd": None if budget_usd is None else str(budget_usd),
        **more,
    }
    return {k: v for k, v in given.items() if v is not None}


@agents.command("update")
@click.argument("agent")
@click.option("--name", default=None)
@click.option("--model", default=None)
@click.option("--instructions", default=None)
@click.option("--max-steps", type=click.IntRange(min=1), default=None)
@budget_options("Each run's budget, unless the run sets one")
def agents_update(
    agent: str,
    name: str | None,
    model: str | None,
    instructions: str | None,
    max_steps: int | None,
    budget_usd: Decimal | None,
) -> None:
    """Change an agent (id or slug): a new version; options not given stay as they are."""
    config = agent_config(model, instructions, max_steps, budget_usd)
    body: dict[str, Any] = {"config": config} if config else {}
    if name is not None:
        body["name"] = name
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    echo_json(with_api(lambda c: c.call("PATCH", f"/v1/agents/{agent}", body)))


async def agent_slugs(client: ApiClient) -> dict[str, str]:
    """The project's agents' slugs by id, so that output names agents as users do."""
    found = await client.listing("/v1/agents", {"limit": 200})
    return {a["id"]: a["slug"] for a in found}


async def with_slug(client: ApiClient, found: dict[str, Any]) -> dict[str, Any]:
    """``found`` (a schedule, a webhook, a run) with its agent's slug after its ``agent_id``."""
    agent_id = found.get("agent_id")
    if not isinstance(agent_id, str):
        return found
    try:
        slug = (await client.call("GET", f"/v1/agents/{agent_id}"))["slug"]
    except NotFound:  # a run of the SDK's direct mode may name no agent
        return found
    out: dict[str, Any] = {}
    for key, value in found.items():
        out[key] = value
        if key == "agent_id":
            out["agent_slug"] = slug
    return out


def http_tool(spec: str) -> dict[str, Any]:
    """``[NAME=]URL`` as an HTTP tool; the name defaults to the URL's last path segment."""
    name, sep, url = spec.partition("=")
    if not sep or "://" in name:
        name, url = "", spec
    name = name or re.sub(r"[^A-Za-z0-9_-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[:64]
    return {
        "name": name or "tool",
        "description": f"POST JSON arguments to {url}",
        "parameters": {"type": "object", "additionalProperties": True},
        "url": url,
    }


@agents.command("list")
def agents_list() -> None:
    """List the project's agents."""
    for agent in with_api(lambda c: c.listing("/v1/agents", {"limit": 200})):
        click.echo(f"{agent['id']}  {agent['slug']:<24} {agent['name']}")


@agents.command("get")
@click.argument("agent")
def agents_get(agent: str) -> None:
    """Show an agent (id or slug)."""
    echo_json(with_api(lambda c: c.call("GET", f"/v1/agents/{agent}")))


@agents.command("register")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--agent", "slug", required=True, help="The agent's slug (created if missing).")
@click.option("--function", "function", default=None, help="The @agent to run, if several.")
def agents_register(path: Path, slug: str, function: str | None) -> None:
    """Register PATH (an agent module) as AGENT's next deployment for the process runtime.

    Workers on this machine then run the agent's runs from that file: `papayya run SLUG`.
    The server must allow the project the process runtime (PAPAYYA_PROCESS_RUNTIME=all or
    projects:<id>; `make run` sets all): elsewhere it answers 403.
    """
    if path.suffix != ".py":
        raise click.ClickException(f"{path} is not a Python file (.py)")
    body: dict[str, Any] = {"runtime": "process", "entrypoint": str(path.resolve())}
    if function:
        body["agent_function"] = function

    async def go(client: ApiClient) -> dict[str, Any]:
        try:
            await client.call("GET", f"/v1/agents/{slug}")
        except NotFound:
            await client.call("POST", "/v1/agents", {"name": slug, "slug": slug, "config": {}})
        created: dict[str, Any] = await client.call("POST", f"/v1/agents/{slug}/deployments", body)
        return created

    deployment = with_api(go)
    click.echo(
        f"{slug}: deployment {deployment['id']} version {deployment['version']} "
        f"{deployment['status']} (process runtime, {deployment['entrypoint']})"
    )


@click.command("run")
@click.argument("agent")
@click.option("--input", "input_", default=None,
              help="The run's input, as JSON (text is a JSON string: '\"hello\"').")  # fmt: skip
@budget_options("This run's budget (default: the agent's)")
@click.option("--max-steps", type=click.IntRange(min=1), default=None)
@click.option("--model", default=None, help="Another model than the agent's, for this run.")
@click.option("--system-prompt", default=None, help="Other instructions, for this run.")
@click.option("--timeout", "timeout_seconds", type=TIMEOUT, default=None, help=TIMEOUT_HELP)
@click.option("--wait", is_flag=True,
              help="Follow the run live until it ends: each step once, and a line while "
                   "it waits for a lost worker's lease.")  # fmt: skip
def run(
    agent: str,
    input_: str | None,
    budget_usd: Decimal | None,
    max_steps: int | None,
    model: str | None,
    system_prompt: str | None,
    timeout_seconds: int | None,
    wait: bool,
) -> None:
    """Start a run of AGENT (id or slug) and print its id; with --wait, its steps and then
    its answer."""
    body = {
        k: v
        for k, v in {
            "input": parse_input(input_),
            "budget_cents": whole_cents(budget_usd),
            "max_steps": max_steps,
            "model": model,
            "system_prompt": system_prompt,
            "timeout_seconds": timeout_seconds,
        }.items()
        if v is not None
    }

    async def go(client: ApiClient) -> str:
        created = await client.call("POST", f"/v1/agents/{agent}/runs", body)
        click.echo(created["id"])
        if not wait:
            return "queued"
        return await follow(client, created["id"], answer=True)

    status = with_api(go)
    if wait and status != "completed":
        raise SystemExit(1)
