"""Built-in agent loop benchmark: what the loop's durability (metering, recording, budget
reservations) costs per step, against the same conversation made directly.

Run from the repo root: ``.venv/bin/python bench/agentloop.py [--runs N] [--steps S]``. It
creates a throw-away database on ``PAPAYYA_BENCH_DATABASE_URL`` (default: the local server),
starts the fake provider (zero latency) and an HTTP tool on loopback, and runs N loops of S
tool steps and a final answer, one at a time, in this process. The baseline makes the same
model calls and tool POSTs directly (no store, no meter). Prints Markdown
tables with the machine's load; never part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # runnable as a script without installing the package

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

from eventstore.migrations import migrate  # noqa: E402
from eventstore.postgres import PostgresEventStore  # noqa: E402
from fakellm import FakeConfig, Reply, ToolCall  # noqa: E402
from fakellm.testing import running_fake  # noqa: E402
from papayya.domain import events as ev  # noqa: E402
from papayya.metering.meter import Upstream  # noqa: E402
from papayya.readmodels.agents import Agent, Agents  # noqa: E402
from papayya.runs import Runs  # noqa: E402
from workers.agentloop import AgentLoopRuntime, LoopHandle  # noqa: E402
from workers.runtime import Deployment, Launch  # noqa: E402

KEY = "sk-bench"


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


@asynccontextmanager
async def database(dsn: str) -> AsyncIterator[str]:
    name = f"papayya_bench_loop_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(dsn, name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@asynccontextmanager
async def tool_server() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"city": body.get("city"), "sky": "grey"})

    app = web.Application()
    app.router.add_post("/tool", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/tool"
    finally:
        await runner.cleanup()


def script(steps: int) -> list[Reply]:
    calls = [Reply(tool_calls=[ToolCall("weather", {"city": f"c{i}"})]) for i in range(steps)]
    return [*calls, Reply(text="done")]


async def direct(session: aiohttp.ClientSession, base: str, tool: str, steps: int) -> float:
    """The same conversation, straight to the fake and the tool."""
    started = time.perf_counter()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    spec = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    for _ in range(steps + 1):
        body = {"model": "gpt-4o-mini", "messages": messages, "tools": [spec]}
        headers = {"Authorization": f"Bearer {KEY}"}
        async with session.post(f"{base}/chat/completions", json=body, headers=headers) as r:
            message = (await r.json())["choices"][0]["message"]
        messages.append(message)
        for call in message.get("tool_calls") or []:
            args = json.loads(call["function"]["arguments"])
            async with session.post(tool, json=args) as r:
                content = await r.text()
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    return time.perf_counter() - started


async def main(runs_n: int, steps: int) -> None:
    base_dsn = os.environ.get(
        "PAPAYYA_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"
    )
    async with database(base_dsn) as dsn, running_fake(FakeConfig()) as fake, tool_server() as tool:
        await migrate(dsn)
        store = await PostgresEventStore.connect(dsn)
        pool = store.pool
        project = await pool.fetchval("SELECT project_id FROM projects LIMIT 1")
        if project is None:
            project = "proj_bench"
            await pool.execute(
                "INSERT INTO projects (project_id, name) VALUES ($1, 'bench')", project
            )
        now = datetime.now(UTC)
        config = {"model": "gpt-4o-mini", "tools": [
            {"name": "weather", "description": "", "parameters": {}, "url": tool}]}  # fmt: skip
        agent = await Agents(store).create(
            Agent("agent_bench", project, "b", "b", None, config, 1, now, now), now
        )
        upstreams = {"openai": Upstream(fake.openai_base_url, KEY),
                     "anthropic": Upstream(fake.anthropic_base_url, KEY)}  # fmt: skip
        runtime = AgentLoopRuntime(store, upstreams, allow_private=True)  # type: ignore[arg-type]
        deployment = Deployment("builtin", project, agent.id, 1, "agentloop", "builtin")
        runs = Runs(store)
        loop_s: list[float] = []
        direct_s: list[float] = []
        async with aiohttp.ClientSession() as session:
            for _ in range(runs_n):
                fake.script.extend(script(steps))
                direct_s.append(await direct(session, fake.openai_base_url, tool, steps))
                run_id = f"run_bench_{uuid.uuid4().hex[:12]}"
                state = await runs.queue(ev.RunQueued(
                    run_id=run_id, project_id=project, agent_id=agent.id,
                    budget_micro_usd=10**12, metadata={"papayya.model": "gpt-4o-mini"},
                ))  # fmt: skip
                fake.script.extend(script(steps))
                await runs.append(state, [ev.RunStarted(attempt=1)])
                started = time.perf_counter()
                handle: LoopHandle = await runtime.start(Launch(run_id, 1, deployment, "", ""))
                code = await handle.wait()
                loop_s.append(time.perf_counter() - started)
                done = await runs.load(run_id)
                assert code == 0 and done.status == "completed", done.error_message
        await runtime.close()
        await store.close()
    per = steps + 1

    def row(name: str, values: list[float]) -> str:
        med = statistics.median(values) * 1000
        return f"| {name} | {med:.1f} | {med / per:.2f} |"

    print(f"\n{runs_n} runs of {steps} tool steps and an answer; medians. load: "
          f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"({os.cpu_count()} cores)\n")  # fmt: skip
    print("| path | ms per run | ms per step |\n|---|---|---|")
    print(row("direct to fake + tool (baseline)", direct_s))
    print(row("built-in loop (metered, recorded)", loop_s))
    added = (statistics.median(loop_s) - statistics.median(direct_s)) * 1000 / per
    print(f"\nadded by the loop: {added:.2f} ms per step")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.steps))
