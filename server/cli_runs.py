"""``papayya runs …``: through the API when ``PAPAYYA_BASE_URL`` is set, else straight from
the database (``PAPAYYA_DATABASE_URL`` or the embedded one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import click
import msgspec

from eventstore.postgres import PostgresEventStore
from eventstore.types import Filters
from papayya.apiclient import ApiClient
from papayya.commands.cancel import cancel_events
from papayya.commands.replay import copied_steps, queue_replay, replay_of
from papayya.commands.resume import resume_run
from papayya.config import Config
from papayya.database import database_url
from papayya.domain import events as ev
from papayya.domain.bounds import MAX_TOKENS
from papayya.domain.fold import fold
from papayya.domain.state import TERMINAL
from papayya.errors import NotFound, PapayyaError
from papayya.models import run_logs_out, run_out, run_out_from_summary, step_out
from papayya.runs import Runs, run_events, run_stream
from server.cli_api import (
    LeaseLook,
    Quiet,
    agent_slugs,
    api_mode,
    echo_json,
    follow,
    parse_input,
    step_line,
    watch_lease,
    with_api,
)
from server.cli_options import budget_options, whole_cents

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


async def direct_slugs(store: PostgresEventStore, project: str | None) -> dict[str, str]:
    """The project's agents' slugs by id (runs of the SDK's direct mode name no agent row)."""
    from papayya.readmodels.agents import Agents

    if project is None:
        return {}
    return {a.id: a.slug for a in await Agents(store).page(project, (None, None), 200)}


def agent_id_of(ref: str, slugs: dict[str, str]) -> str:
    """An agent's id from its id or slug."""
    return next((agent_id for agent_id, slug in slugs.items() if slug == ref), ref)


def render_run(run: dict[str, Any], steps: list[dict[str, Any]]) -> str:
    error = f" ({run['error_code']}: {run['error_message']})" if run.get("error_code") else ""
    head = [
        f"run       {run['id']}",
        f"agent     {run.get('agent_slug') or run['agent_id']}",
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
    """Inspect and steer runs: list, show, state, cancel, resume, replay, logs."""


@runs.command("list")
@click.option("--agent", default=None, help="Only this agent's runs.")
@click.option("--status", default=None, help="Only runs with this status.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
def list_runs(agent: str | None, status: str | None, limit: int) -> None:
    """Recent runs."""
    if api_mode():
        params = {"agent_id": agent, "status": status, "limit": limit}

        async def via_api(c: ApiClient) -> tuple[list[Any], dict[str, str]]:
            return await c.listing("/v1/runs", params, most=limit), await agent_slugs(c)

        rows, slugs = with_api(via_api)
    else:

        async def direct(store: PostgresEventStore) -> list[dict[str, Any]]:
            # The project's runs, as the API lists them (the SDK's direct mode writes there).
            project = await cli_project(store)
            slugs.update(await direct_slugs(store, project))
            wanted = None if agent is None else agent_id_of(agent, slugs)
            found = [
                builtins(run_out_from_summary(s))
                for _, _, s in await store.summaries("run", limit=10_000)
            ]
            return [
                r
                for r in found
                if (project is None or r["project_id"] == project)
                and (wanted is None or r["agent_id"] == wanted)
                and (status is None or r["status"] == status)
            ]

        slugs = {}
        rows = sorted(with_store(direct), key=lambda r: str(r["created_at"]), reverse=True)[:limit]
    click.echo(
        table(
            ("run", "agent", "status", "steps", "cost", "created"),
            [
                (
                    r["id"],
                    slugs.get(r["agent_id"], r["agent_id"]),
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
    """A run with a table of its steps (durations, tokens, costs), each model step's tool
    calls under it, and a replay's steps answered from the recording marked (recorded)."""
    if api_mode():

        async def via_api(c: ApiClient) -> tuple[Any, Any]:
            run = await c.call("GET", f"/v1/runs/{run_id}")
            steps = await c.call("GET", f"/v1/runs/{run_id}/steps")
            with contextlib.suppress(NotFound):  # a run of the SDK's direct mode may name none
                run["agent_slug"] = (await c.call("GET", f"/v1/agents/{run['agent_id']}"))["slug"]
            return run, steps

        run, steps = with_api(via_api)
    else:

        async def direct(store: PostgresEventStore) -> tuple[Any, Any]:
            state = await Runs(store).load(run_id)
            slugs = await direct_slugs(store, state.project_id)
            run = builtins(run_out(state)) | {"agent_slug": slugs.get(state.agent_id)}
            return run, [builtins(step_out(s)) for s in state.steps]

        run, steps = with_store(direct)
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
@click.option("--timeout", type=click.FloatRange(0, 3600), default=30.0, show_default=True,
              help="Seconds to wait for a running run to stop.")  # fmt: skip
def cancel(run_id: str, timeout: float) -> None:
    """Cancel a run and print the state it ended in: a queued run never starts; a running
    one is asked to stop, and `cancelled` (or `completed`, if it finished first) is printed
    once it has ended. Exits 0 only if the run ended cancelled."""
    if api_mode():
        ended = with_api(lambda c: cancel_via_api(c, run_id, timeout))
    else:
        ended = with_store(lambda store: cancel_direct(store, run_id, timeout))
    report_end(run_id, ended, timeout)


END_POLL_SECONDS = 0.2


async def cancel_via_api(client: ApiClient, run_id: str, timeout: float) -> dict[str, Any]:
    run: dict[str, Any] = await client.call("POST", f"/v1/runs/{run_id}/cancel", {})
    deadline = asyncio.get_running_loop().time() + timeout
    while run["status"] not in TERMINAL and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(END_POLL_SECONDS)
        run = await client.call("GET", f"/v1/runs/{run_id}")
    return run


async def cancel_direct(store: PostgresEventStore, run_id: str, timeout: float) -> dict[str, Any]:
    runs_ = Runs(store)
    state = await runs_.execute(run_id, cancel_events)
    deadline = asyncio.get_running_loop().time() + timeout
    while not state.is_terminal and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(END_POLL_SECONDS)
        state = await runs_.load(run_id)
    return {"status": state.status}


def report_end(run_id: str, run: dict[str, Any], timeout: float) -> None:
    status = run["status"]
    if status not in TERMINAL:
        click.echo(f"run {run_id} {status} (stop requested; not ended after {timeout:g} s)")
        raise SystemExit(1)
    if status == "cancelled":
        click.echo(f"run {run_id} cancelled")
        return
    click.echo(f"run {run_id} {status} (it ended before it could be stopped)")
    raise SystemExit(1)


@runs.command("resume")
@click.argument("run_id")
@budget_options("The run's new budget: more than it has spent")
@click.option("--budget-input-tokens", type=click.IntRange(0, MAX_TOKENS), default=None)
@click.option("--budget-output-tokens", type=click.IntRange(0, MAX_TOKENS), default=None)
@click.option("--budget-total-tokens", type=click.IntRange(0, MAX_TOKENS), default=None)
def resume(
    run_id: str,
    budget_usd: Decimal | None,
    budget_input_tokens: int | None,
    budget_output_tokens: int | None,
    budget_total_tokens: int | None,
) -> None:
    """Resume a budget_exceeded run with a new budget: it is queued again and continues from
    its last checkpoint. Limits not given stay as they were."""
    limits = {
        "budget_cents": whole_cents(budget_usd),
        "budget_input_tokens": budget_input_tokens,
        "budget_output_tokens": budget_output_tokens,
        "budget_total_tokens": budget_total_tokens,
    }
    limits = {k: v for k, v in limits.items() if v is not None}
    if not limits:
        raise click.UsageError("give the new budget: --budget-usd (or a token budget)")
    if api_mode():
        run = with_api(lambda c: c.call("POST", f"/v1/runs/{run_id}/resume", limits))
    else:

        async def direct(store: PostgresEventStore) -> dict[str, Any]:
            runs_ = Runs(store)
            project = (await runs_.load(run_id)).project_id
            resumed: dict[str, Any] = builtins(
                run_out(await resume_run(runs_, project, run_id, **limits))
            )
            return resumed

        run = with_store(direct)
    budget = run.get("budget_cents")
    shown = "no limit" if budget is None else f"${Decimal(budget) / 100:.2f}"
    click.echo(f"run {run_id} {run['status']} (budget {shown})")


@runs.command("replay")
@click.argument("run_id")
@click.option("--from-step", type=click.IntRange(min=0), required=True)
@click.option("--input", "input_", default=None, help="New input, as JSON.")
@click.option("--model", default=None, help="Another model from N on (built-in loop agents).")
@click.option("--system-prompt", default=None, help="Other instructions from N on (likewise).")
def replay(
    run_id: str, from_step: int, input_: str | None, model: str | None, system_prompt: str | None
) -> None:
    """Start a new run that answers steps before N from RUN_ID's recording."""
    body: dict[str, Any] = {"from_step": from_step}
    new_input = parse_input(input_)
    if input_ is not None:
        body["input"] = new_input
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
        queued = replay_of(fold(recorded), new_id, from_step, new_input)
        return (await queue_replay(runs_, queued, copied_steps(recorded, from_step))).run_id

    click.echo(with_store(direct))


@runs.command("logs")
@click.argument("run_id")
@click.option("-f", "--follow", "follow_", is_flag=True,
              help="Keep printing until the run ends (and say when it waits for a lost "
                   "worker's lease).")  # fmt: skip
def logs(run_id: str, follow_: bool) -> None:
    """Print the run's steps and its agent's output (stdout, stderr, logging) in time order,
    then how it ended (the error code and message of a failed run); with -f, follow it live
    (the agent's output is printed as the worker records it, every few seconds)."""
    if api_mode():
        with_api(lambda c: follow_logs_api(c, run_id) if follow_ else print_logs_api(c, run_id))
    else:
        with_store(lambda store: logs_direct(store, run_id, follow_))


# How long `runs logs -f` waits, once the run has ended, for its worker to record the output
# of the run's last attempt (written as the agent process exits).
OUTPUT_WAIT_SECONDS = 5.0


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value)) if value else datetime.max.replace(tzinfo=UTC)


def output_line(line: dict[str, Any]) -> str:
    return f"  | {line['text']}"


def log_view(steps: list[dict[str, Any]], lines: list[dict[str, Any]]) -> list[str]:
    """The run's ended steps and its output lines, by time: a step when it ended, a line when
    the worker read it. A replayed step (answered from the recording) is marked."""
    entries: list[tuple[datetime, int, str]] = []
    for s in steps:
        if s["status"] != "running":
            mark = "  (recorded)" if s.get("replayed") else ""
            entries.append(
                (_when(s.get("completed_at") or s.get("started_at")), 0, step_line(s) + mark)
            )
    entries += [(_when(line["at"]), 1, output_line(line)) for line in lines]
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return [text for _, _, text in entries]


def end_line(run: dict[str, Any]) -> str:
    """``run <id> <status>``, with the error code and message of a run that did not complete."""
    error = f" ({run['error_code']}: {run['error_message']})" if run.get("error_code") else ""
    return f"run {run['id']} {run['status']}{error}"


async def print_logs_api(client: Any, run_id: str) -> None:
    run = await client.call("GET", f"/v1/runs/{run_id}")
    steps = await client.call("GET", f"/v1/runs/{run_id}/steps")
    found = await client.call("GET", f"/v1/runs/{run_id}/logs")
    for text in log_view(steps, found["data"]):
        click.echo(text)
    if run["status"] in TERMINAL:
        click.echo(end_line(run))


async def follow_logs_api(client: Any, run_id: str) -> None:
    """What the run shows so far, then steps as they end (``follow``: each once, and the
    lease-wait line) and the agent's output as the worker records it; once the run has
    ended, the rest of its output and how it ended. A run that has ended already is printed
    as without -f: its output between its steps."""
    if (await client.call("GET", f"/v1/runs/{run_id}"))["status"] in TERMINAL:
        await print_logs_api(client, run_id)
        return
    # What the run shows so far, its output between its steps; then the rest, live.
    steps = await client.call("GET", f"/v1/runs/{run_id}/steps")
    found = await client.call("GET", f"/v1/runs/{run_id}/logs")
    ended = [s for s in steps if s["status"] != "running"]
    for text in log_view(ended, found["data"]):
        click.echo(text)
    printed = {int(s["step_number"]) for s in ended}
    shown = {_key(line) for line in found["data"]}

    def live(data: dict[str, Any]) -> None:  # lines the worker recorded while the run runs
        for line in data.get("data") or []:
            _show(line, shown)

    await follow(
        client, run_id, ended=lambda: print_output_and_end(client, run_id, shown),
        output=live, printed=printed,
    )  # fmt: skip


def _key(line: dict[str, Any]) -> tuple[str, int, str]:
    return _when(line["at"]).isoformat(), int(line["attempt"]), str(line["text"])


def _show(line: dict[str, Any], shown: set[tuple[str, int, str]]) -> None:
    """Print an output line unless it was printed already (live, then again from the log)."""
    key = _key(line)
    if key not in shown:
        shown.add(key)
        click.echo(output_line(line))


async def print_output_and_end(
    client: Any, run_id: str, shown: set[tuple[str, int, str]] | None = None
) -> None:
    """The ended run's output not printed yet (``shown``: printed live), waiting a little
    for its last attempt's (the worker records the rest as the agent exits), then how the
    run ended."""
    run = await client.call("GET", f"/v1/runs/{run_id}")
    shown = set() if shown is None else shown
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OUTPUT_WAIT_SECONDS
    while True:
        found = await client.call("GET", f"/v1/runs/{run_id}/logs")
        for line in found["data"]:
            _show(line, shown)
        done = run["attempt"] in found["attempts"] or run.get("trigger") == "sdk"
        if done or run["attempt"] == 0 or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    click.echo(end_line(run))


async def logs_direct(store: PostgresEventStore, run_id: str, follow_: bool) -> None:
    recorded = await store.read_stream(run_stream(run_id))
    if not recorded:
        await Runs(store).load(run_id)  # RunNotFound
    events = run_events(recorded)
    state = fold(events)
    steps = [builtins(step_out(s)) for s in state.steps]
    lines = builtins(run_logs_out(events).data)
    for text in log_view(steps, lines):
        click.echo(text)
    printed = sum(1 for s in state.steps if s.status != "running")
    if state.is_terminal:
        click.echo(end_line(builtins(run_out(state))))
    if not follow_ or state.is_terminal:
        return
    sub = store.subscribe(after=recorded[-1].cursor, filters=Filters.of(streams=run_stream(run_id)))
    event: ev.RunEvent | None = None
    finals = set(run_logs_out(events).attempts)  # attempts whose output is all printed
    quiet = Quiet()
    watcher = asyncio.create_task(watch_lease(run_id, quiet, direct_lease(store, run_id)))
    async with sub:
        async for item in sub:
            quiet.touch()
            decoded = ev.from_recorded(item)
            assert isinstance(decoded, ev.RunEvent)
            state, event = fold([decoded], state), decoded
            for s in state.steps[printed:]:
                if s.status == "running":
                    break
                click.echo(step_line(builtins(step_out(s))))
                printed += 1
            if isinstance(event, ev.AgentOutput):
                for line in builtins(run_logs_out([event]).data):
                    click.echo(output_line(line))
                if event.final:
                    finals.add(event.attempt)
            if state.is_terminal:
                watcher.cancel()
                break
        # The rest of the last attempt's output may follow the end (the worker records it as
        # the agent exits).
        if state.attempt > 0 and state.trigger != "sdk" and state.attempt not in finals:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTPUT_WAIT_SECONDS):
                    async for item in sub:
                        late = ev.from_recorded(item)
                        if isinstance(late, ev.AgentOutput):
                            for line in builtins(run_logs_out([late]).data):
                                click.echo(output_line(line))
                            if late.attempt == state.attempt and late.final:
                                break
    click.echo(end_line(builtins(run_out(state))))


def direct_lease(store: PostgresEventStore, run_id: str) -> LeaseLook:
    """The run's status and its worker's lease, from the database (``watch_lease``)."""
    from papayya.readmodels.leases import Leases

    async def look() -> tuple[str, dict[str, Any] | None]:
        found = await store.summary(run_stream(run_id))
        status = "unknown" if found is None else str(found[1].get("status"))
        lease = await Leases(store).of_run(run_id)
        return status, None if lease is None else builtins(lease)

    return look
