"""Helpers of the budget tests: a gateway in front of the fake provider, priced in cents."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from papayya.domain import events as ev
from papayya.domain.state import RunState
from tests.support.gateway import Gateway

# One cent an output token, input free: a reservation is then its output cap in cents, which
# keeps the arithmetic of the tests readable.
CENTS_MODEL = "cents-model"
CENT = 10_000  # micro-USD
ASK = [{"role": "user", "content": "count to a hundred"}]


async def price_in_cents(gw: Gateway) -> None:
    card = {CENTS_MODEL: {"input_per_million_usd": "0", "output_per_million_usd": "10000"}}
    url = f"{gw.api.url}/v1/projects/{await gw.project_id()}/rate-card"
    async with aiohttp.ClientSession() as http:
        async with http.put(url, json=card, headers=gw.api.headers()) as resp:
            assert resp.status == 200, await resp.text()


async def until(gw: Gateway, run_id: str, ok: Callable[[RunState], bool]) -> RunState:
    """The run's state once ``ok`` holds; fails after 15 s. For what happens after the
    caller's call returned (a settlement when the gateway notices a hang-up)."""
    deadline = time.monotonic() + 15
    while True:
        state = await gw.runs.load(run_id)
        if ok(state):
            return state
        assert time.monotonic() < deadline, f"the run never got there: {state}"
        await asyncio.sleep(0.05)


async def events_of(gw: Gateway, run_id: str) -> list[ev.RunEvent]:
    return await gw.runs.events(run_id)


def reservations(events: list[ev.RunEvent]) -> list[ev.BudgetReserved]:
    return [e for e in events if isinstance(e, ev.BudgetReserved)]


def settlements(events: list[ev.RunEvent]) -> list[ev.BudgetSettled]:
    return [e for e in events if isinstance(e, ev.BudgetSettled)]


def llm_calls(events: list[ev.RunEvent]) -> list[ev.LlmCallRecorded]:
    return [e for e in events if isinstance(e, ev.LlmCallRecorded)]
