"""CLI commands that talk to the HTTP API (``PAPAYYA_BASE_URL``, ``PAPAYYA_API_KEY``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from papayya.apiclient import ApiClient
from papayya.domain.bounds import MAX_TIMEOUT_SECONDS
from papayya.errors import NotFound, PapayyaError, Unauthorized

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


def parse_input(raw: str | None) -> Any:
    """``--input`` as JSON if it parses, else the string as given."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def step_line(step: dict[str, Any]) -> str:
    what = step.get("label") or step.get("model") or ""
    return (
        f"step {step['step_number']:>3}  {step['step_type']:<10} {what:<24} "
        f"{step['status']:<9} {step['duration_ms']:>8.1f} ms  "
        f"in {step['input_tokens']:>6}  out {step['output_tokens']:>6}  ${step['cost_usd']}"
    )


async def follow(client: ApiClient, run_id: str, answer: bool = False) -> str:
    """Print steps as they end until the run is terminal; returns its status. ``answer``:
    print the run's output (or error) before the last line."""
    status = "unknown"
    async for event, _id, data in client.sse(f"/v1/runs/{run_id}/events"):
        if event == "step":
            click.echo(step_line(data))
        elif event == "terminal":
            status = str(data.get("status"))
            if answer:
                await print_answer(client, run_id)
            click.echo(f"run {run_id} {status}")
            break
        elif event == "error":  # the server ended the stream: its API key was revoked
            raise Unauthorized(str((data.get("error") or {}).get("message") or "unauthorized"))
    return status


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
@click.option("--budget-usd", default=None, help="Per-run budget in dollars, e.g. 0.50.")
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
    budget_usd: str | None,
    tool_urls: tuple[str, ...],
    mcp_urls: tuple[str, ...],
    output_schema: str | None,
    temperature: float | None,
    timeout_seconds: int | None,
) -> None:
    """Create an agent. With --model and no deployment, its runs use the built-in loop."""
    config = {
        k: v
        for k, v in {
            "model": model,
            "instructions": instructions,
            "max_steps": max_steps,
            "budget_usd": budget_usd,
            "temperature": temperature,
            "timeout_seconds": timeout_seconds,
            "output_schema": None if output_schema is None else parse_input(output_schema),
            "tools": [http_tool(t) for t in tool_urls] or None,
            "mcp_servers": [{"url": u} for u in mcp_urls] or None,
        }.items()
        if v is not None
    }
    body = {"name": name, "slug": slug, "config": config}
    echo_json(with_api(lambda c: c.call("POST", "/v1/agents", body)))


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
@click.option("--input", "input_", default=None, help="JSON, or a plain string.")
@click.option("--budget-cents", type=click.IntRange(min=0), default=None)
@click.option("--max-steps", type=click.IntRange(min=1), default=None)
@click.option("--model", default=None, help="Another model than the agent's, for this run.")
@click.option("--system-prompt", default=None, help="Other instructions, for this run.")
@click.option("--timeout", "timeout_seconds", type=TIMEOUT, default=None, help=TIMEOUT_HELP)
@click.option("--wait", is_flag=True, help="Follow the run live until it ends.")
def run(
    agent: str,
    input_: str | None,
    budget_cents: int | None,
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
            "budget_cents": budget_cents,
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
