"""``papayya runs …``: look at runs (direct database access in this mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import click
import msgspec

from eventstore.postgres import PostgresEventStore
from papayya.config import Config
from papayya.database import database_url
from papayya.domain.state import RunState
from papayya.errors import PapayyaError
from papayya.runs import Runs

T = TypeVar("T")


def usd(micro: int) -> str:
    return f"${Decimal(micro) / 1_000_000:.6f}"


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


def render_run(state: RunState) -> str:
    head = [
        f"run       {state.run_id}",
        f"agent     {state.agent_id}",
        f"status    {state.status}"
        + (f" ({state.error_code}: {state.error_message})" if state.error_code else ""),
        f"attempt   {state.attempt}",
        f"steps     {state.next_step}",
        f"tokens    in {state.usage.total_input_tokens}, out {state.usage.total_output_tokens}"
        f", cached {state.usage.cached_input_tokens}",
        f"cost      {usd(state.usage.cost_micro_usd)}",
    ]
    if state.replayed_from:
        head.append(f"replay of {state.replayed_from} from step {state.replay_from_step}")
    if state.diverged_at_step is not None:
        head.append(f"diverged  at step {state.diverged_at_step}")
    rows = [
        (
            s.step_number,
            s.step_type,
            s.label or s.model or "",
            s.status,
            f"{s.duration_ms:.1f}",
            s.usage.total_input_tokens,
            s.usage.total_output_tokens,
            usd(s.usage.cost_micro_usd),
        )
        for s in state.steps
    ]
    headers = ("step", "type", "label/model", "status", "ms", "in", "out", "cost")
    return "\n".join(head) + "\n\n" + table(headers, rows)


@click.group()
def runs() -> None:
    """Inspect runs: list, show steps, state at a step."""


@runs.command("show")
@click.argument("run_id")
def show(run_id: str) -> None:
    """A run with a table of its steps: durations, tokens and costs."""
    state = with_store(lambda store: Runs(store).load(run_id))
    click.echo(render_run(state))


@runs.command("state")
@click.argument("run_id")
@click.option("--at-step", type=click.IntRange(min=0), required=True, help="Step number.")
def state(run_id: str, at_step: int) -> None:
    """The run's folded state right after step N, as JSON."""
    folded = with_store(lambda store: Runs(store).state_at(run_id, at_step))
    click.echo(msgspec.json.format(msgspec.json.encode(folded)).decode())
