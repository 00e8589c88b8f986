"""``papayya runs …``: through the API when ``PAPAYYA_BASE_URL`` is set, else straight from
the database (``PAPAYYA_DATABASE_URL`` or the embedded one)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import click
import msgspec

from eventstore.postgres import PostgresEventStore
from eventstore.types import Filters
from papayya.commands.cancel import cancel_events
from papayya.commands.replay import copied_steps, queue_replay, replay_of
from papayya.config import Config
from papayya.database import database_url
from papayya.domain import events as ev
from papayya.domain.fold import fold
from papayya.errors import PapayyaError
from papayya.models import run_out, run_out_from_summary, step_out
from papayya.runs import Runs, run_events, run_stream
from server.cli_api import api_mode, echo_json, follow, parse_input, step_line, with_api

T = TypeVar("T")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def with_store(action: Callable[[PostgresEventStore], Awaitable[T]]) -> T:
    """Run ``action`` against the configured database; domain errors become CLI errors."""

    async def go(dsn: str) -> T:
        store = await PostgresEventStore.connect(dsn, min_size=1, max_size=2, notify=False)
        try:
            return await action(store)
        finally:
            await store.close()

    with database_url(Config.from_env()) as dsn:
        try:
            return asyncio.run(go(dsn))
        except PapayyaError as exc:
            raise click.ClickException(exc.message) from exc


async def cli_project(store: PostgresEventStore) -> str | None:
    """The project whose runs the CLI lists from the database: ``PAPAYYA_PROJECT`` (a name
    or an id), else ``default``; ``None`` (every run) on a database without projects."""
    from papayya.readmodels.projects import project_by_name

    name = os.environ.get("PAPAYYA_PROJECT") or "default"
    found = await project_by_name(store.pool, name)
    if found is not None:
        return found.id
    return name if os.environ.get("PAPAYYA_PROJECT") else None


def render_run(run: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    error = f" ({run['error_code']}: {run['error_message']})" if run.get("error_code") else ""
    head = [
        f"run       {run['id']}",
        f"agent     {run['agent_id']}",
        f"status    {run['status']}{error}",
        f"attempt   {run['attempt']}",
        f"steps     {run['current_step']}",
        f"tokens    in {run['total_input_tokens']}, out {run['total_output_tokens']}, "
        f"cached {run['total_cached_tokens']}",
        f"cost      ${run['cost_usd']}",
    ]
    if run.get("replayed_from"):
        head.append(f"replay of {run['replayed_from']} from step {run['replay_from_step']}")
    if run.get("diverged_at_step") is not None:
        head.append(f"diverged  at step {run['diverged_at_step']}")
    rows = step_rows(steps)
    headers = ("step", "type", "label/model", "status", "ms", "in", "out", "cost")
    return "\n".join(head) + "\n\n" + table(headers, rows)


def step_rows(steps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A row per step (a replayed one marked as answered from the recording), and under
    each step a row per tool call it holds: the model step that asked for it."""
    rows: list[tuple[Any, ...]] = []
    for s in steps:
        status = f"{s['status']} (recorded)" if s.get("replayed") else s["status"]
        rows.append(
            (
                s["step_number"],
                s["step_type"],
                s.get("label") or s.get("model") or "",
                status,
                f"{s['duration_ms']:.1f}",
                s["input_tokens"],
                s["output_tokens"],
                f"${s['cost_usd']}",
            )
        )
        for call in s.get("tool_calls") or []:
            shown = f"  tool {call['tool']}({_brief(call.get('input'))})"
            outcome = "error" if call.get("error") else "ok"
            rows.append(("", "", shown, outcome, f"{call['duration_ms']:.1f}", "", "", ""))
    return rows


def _brief(value: Any, most: int = 60) -> str:
    text = "" if value is None else json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= most else text[: most - 1] + "…"


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


@click.group()
def runs() -> None:
    """Inspect and steer runs: list, show, state, cancel, replay, logs."""


@runs.command("list")
@click.option("--agent", default=None, help="Only this agent's runs.")
@click.option("--status", default=None, help="Only runs with this status.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
def list_runs(agent: str | None, status: str | None, limit: int) -> None:
    """Recent runs."""
    if api_mode():
        params = {"agent_id": agent, "status": status, "limit": limit}
        rows = with_api(lambda c: c.listing("/v1/runs", params, most=limit))
    else:

        async def direct(store: PostgresEventStore) -> list[dict[str, Any]]:
            # The project's runs, as the API lists them (the SDK's direct mode writes there).
            project = await cli_project(store)
            found = [
                builtins(run_out_from_summary(s))
                for _, _, s in await store.summaries("run", limit=10_000)
            ]
            return [
                r
                for r in found
                if (project is None or r["project_id"] == project)
                and (agent is None or r["agent_id"] == agent)
                and (status is None or r["status"] == status)
            ]

        rows = sorted(with_store(direct), key=lambda r: str(r["created_at"]), reverse=True)[:limit]
    click.echo(
        table(
            ("run", "agent", "status", "steps", "cost", "created"),
            [
                (
                    r["id"],
                    r["agent_id"],
                    r["status"],
                    r["current_step"],
                    f"${r['cost_usd']}",
                    r["created_at"],
                )
                for r in rows
            ],
        )
    )


@runs.command("show")
@click.argument("run_id")
def show(run_id: str) -> None:
    """A run with a table of its steps: durations, tokens and costs."""
    if api_mode():

        async def via_api(c: Any) -> tuple[Any, Any]:
            return await c.call("GET", f"/v1/runs/{run_id}"), await c.call(
                "GET", f"/v1/runs/{run_id}/steps"
            )

        run, steps = with_api(via_api)
    else:
        state = with_store(lambda store: Runs(store).load(run_id))
        run, steps = builtins(run_out(state)), [builtins(step_out(s)) for s in state.steps]
    click.echo(render_run(run, steps))


@runs.command("state")
@click.argument("run_id")
@click.option("--at-step", type=click.IntRange(min=0), required=True, help="Step number.")
def state(run_id: str, at_step: int) -> None:
    """The run's folded state right after step N, as JSON."""
    if api_mode():
        echo_json(with_api(lambda c: c.call("GET", f"/v1/runs/{run_id}/state?at_step={at_step}")))
        return
    folded = with_store(lambda store: Runs(store).state_at(run_id, at_step))
    click.echo(msgspec.json.format(msgspec.json.encode(folded)).decode())


@runs.command("cancel")
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel a run: a queued one never starts, a running one is stopped."""
    if api_mode():
        result = with_api(lambda c: c.call("POST", f"/v1/runs/{run_id}/cancel", {}))
        click.echo(f"run {run_id} {result['status']}")
        return
    ran = with_store(lambda store: Runs(store).execute(run_id, cancel_events))
    asked = ran.status == "running" and ran.cancel_requested
    click.echo(f"run {run_id} {ran.status}" + (" (stop requested)" if asked else ""))


@runs.command("replay")
@click.argument("run_id")
@click.option("--from-step", type=click.IntRange(min=0), required=True)
@click.option("--input", "input_", default=None, help="New input (JSON or a string).")
@click.option("--model", default=None, help="Another model from N on (built-in loop agents).")
@click.option("--system-prompt", default=None, help="Other instructions from N on (likewise).")
def replay(
    run_id: str, from_step: int, input_: str | None, model: str | None, system_prompt: str | None
) -> None:
    """Start a new run that answers steps before N from RUN_ID's recording."""
    body: dict[str, Any] = {"from_step": from_step}
    if input_ is not None:
        body["input"] = parse_input(input_)
    changed = {"model": model, "system_prompt": system_prompt}
    body |= {k: v for k, v in changed.items() if v is not None}
    if any(v is not None for v in changed.values()) and not api_mode():
        raise click.ClickException("--model and --system-prompt need the API (PAPAYYA_BASE_URL)")
    if api_mode():
        click.echo(with_api(lambda c: c.call("POST", f"/v1/runs/{run_id}/replay", body))["id"])
        return

    async def direct(store: PostgresEventStore) -> str:
        runs_ = Runs(store)
        recorded = await runs_.events(run_id)
        new_id = f"run_{uuid.uuid4().hex}"
        queued = replay_of(fold(recorded), new_id, from_step, parse_input(input_))
        return (await queue_replay(runs_, queued, copied_steps(recorded, from_step))).run_id

    click.echo(with_store(direct))


@runs.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing until the run ends.")
def logs(run_id: str, follow_: bool) -> None:
    """Print the run's steps; with -f, follow them live."""
    if api_mode():
        if follow_:
            with_api(lambda c: follow(c, run_id))
        else:
            for s in with_api(lambda c: c.call("GET", f"/v1/runs/{run_id}/steps")):
                click.echo(step_line(s))
        return

    async def direct(store: PostgresEventStore) -> None:
        events = await store.read_stream(run_stream(run_id))
        state = fold(run_events(events)) if events else await Runs(store).load(run_id)
        printed = 0
        for s in state.steps:
            if s.status != "running":
                click.echo(step_line(builtins(step_out(s))))
                printed += 1
        if not follow_ or state.is_terminal:
            return
        sub = store.subscribe(
            after=events[-1].cursor, filters=Filters.of(streams=run_stream(run_id))
        )
        async with sub:
            async for recorded in sub:
                event = ev.from_recorded(recorded)
                assert isinstance(event, ev.RunEvent)
                state = fold([event], state)
                for s in state.steps[printed:]:
                    if s.status == "running":
                        break
                    click.echo(step_line(builtins(step_out(s))))
                    printed += 1
                if state.is_terminal:
                    click.echo(f"run {run_id} {state.status}")
                    return

    with_store(direct)
