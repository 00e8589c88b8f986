"""``papayya projects`` and ``papayya rate-card`` as a user types them: the project's run
defaults (through the API, or the database in direct mode) and its prices."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import asyncpg
import pytest

from tests.support.api import Api, call, default_project, running_api


async def cli(*args: str, **env_vars: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env.update(env_vars)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def through(api: Api) -> dict[str, str]:
    return {"PAPAYYA_BASE_URL": api.url, "PAPAYYA_API_KEY": api.key}


async def test_project_defaults_and_prices_through_the_api(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with running_api(dsn, monkeypatch) as api:
        code, out, err = await cli("projects", "show", **through(api))
        assert code == 0, err
        shown = json.loads(out)
        assert (shown["default_budget_cents"], shown["default_max_steps"]) == (500, 50)
        code, out, err = await cli("projects", "defaults", "--max-steps", "20", **through(api))
        assert code == 0, err
        assert (json.loads(out)["default_budget_cents"], json.loads(out)["default_max_steps"]) == (
            500, 20,
        )  # fmt: skip
        code, out, err = await cli("projects", "defaults", "--budget-cents", "none",
                                   **through(api))  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["default_budget_cents"] is None
        for bad in (["--max-steps", "0"], ["--budget-cents", "-3"], ["--max-steps", "lots"], []):
            code, _, err = await cli("projects", "defaults", *bad, **through(api))
            assert code != 0 and err, bad
        project = await default_project(api, http)
        status, got = await call(api, http, "GET", f"/v1/projects/{project}")
        assert status == 200
        assert (got["default_budget_cents"], got["default_max_steps"]) == (None, 20)

        code, _, err = await cli("rate-card", "set", "house-model", "--input-per-million", "1.5",
                                 "--output-per-million", "3", **through(api))  # fmt: skip
        assert code == 0, err
        code, _, err = await cli("rate-card", "set", "other", "--input-per-million", "0.25",
                                 "--output-per-million", "1", **through(api))  # fmt: skip
        assert code == 0, err
        code, _, err = await cli("rate-card", "set", "bad", "--input-per-million", "x",
                                 "--output-per-million", "1", **through(api))  # fmt: skip
        assert code != 0 and "--input-per-million" in err
        code, out, err = await cli("rate-card", "show", **through(api))
        assert code == 0, err
        card = json.loads(out)
        assert set(card) == {"house-model", "other"}  # the first price was kept
        assert card["house-model"]["input_per_million_usd"] == "1.5"
        assert card["house-model"]["output_cents_per_million"] == 300


async def test_project_defaults_in_direct_mode(dsn: str) -> None:
    code, out, err = await cli("projects", "defaults", "--max-steps", "7", "--budget-cents",
                               "900", PAPAYYA_DATABASE_URL=dsn)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["name"] == "default"
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT default_budget_cents, default_max_steps FROM projects WHERE name = 'default'"
        )
    finally:
        await conn.close()
    assert row is not None and tuple(row) == (900, 7)
    code, out, err = await cli("projects", "show", PAPAYYA_DATABASE_URL=dsn)
    assert code == 0, err
    assert (json.loads(out)["default_budget_cents"], json.loads(out)["default_max_steps"]) == (
        900, 7,
    )  # fmt: skip
