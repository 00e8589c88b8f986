"""The bootstrap key (``PAPAYYA_BOOTSTRAP_API_KEY``) is checked before the server writes
anything, and a first start never leaves a project without a key: the ``default`` project and
its key are created in one transaction, and a keyless ``default`` project left by an older
version gets its key at the next start."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from papayya.config import Config
from papayya.errors import InvalidInput
from web.app import init_app

pytestmark = pytest.mark.timeout(120)

BAD_KEYS = [
    "cpk_short",
    "sk-" + "a" * 40,  # not ours
    "cpk_" + "a" * 300,  # longer than any key that authenticates
    "cpk_with space" + "a" * 20,
    "cpk_" + "a" * 20 + "\n",
    "cpk_" + "é" * 20,
]


@asynccontextmanager
async def started(dsn: str) -> AsyncIterator[str]:
    """The app started on loopback with the environment's bootstrap key; yields its URL."""
    runner = web.AppRunner(init_app(Config(database_url=dsn, run_projectors=False), dsn))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def rows(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        projects = await conn.fetchval("SELECT count(*) FROM projects")
        api_keys = await conn.fetchval("SELECT count(*) FROM api_keys")
        return int(projects), int(api_keys)
    finally:
        await conn.close()


async def works(url: str, key: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url + "/v1/agents", headers={"X-Api-Key": key}) as response,
    ):
        assert response.status == 200, await response.text()


async def test_a_bad_bootstrap_key_fails_the_start_and_writes_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in BAD_KEYS:
        monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", bad)
        with pytest.raises(InvalidInput, match="PAPAYYA_BOOTSTRAP_API_KEY"):
            async with started(dsn):
                pass
        assert await rows(dsn) == (0, 0), bad
    good = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", good)
    async with started(dsn) as url:
        await works(url, good)
    assert await rows(dsn) == (1, 1)


async def test_the_command_refuses_a_bad_bootstrap_key_before_starting(dsn: str) -> None:
    env = {**os.environ, "PAPAYYA_DATABASE_URL": dsn, "PAPAYYA_BOOTSTRAP_API_KEY": "cpk_short"}
    for command in ("api", "server"):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", command, "--port", "0",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode != 0, (out, err)
        assert b"PAPAYYA_BOOTSTRAP_API_KEY" in err, err
        assert b"Traceback" not in err, err
        assert b"listening" not in out, out  # refused before anything started
    assert await rows(dsn) == (0, 0)


async def test_a_first_start_that_fails_leaves_no_project_without_a_key(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "cpk_test_" + uuid.uuid4().hex
    monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", key)
    conn = await asyncpg.connect(dsn)
    try:
        # The key's insert fails (as a lost connection or a full disk would make it fail).
        await conn.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql
              AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON api_keys EXECUTE FUNCTION refuse();
        """)
        with pytest.raises(asyncpg.RaiseError, match="disk full"):
            async with started(dsn):
                pass
        assert await rows(dsn) == (0, 0)  # the project went with the key
        await conn.execute("DROP TRIGGER refuse ON api_keys")
        async with started(dsn) as url:
            await works(url, key)

        # A keyless default project, as a failed first start of an older version left it,
        # gets its key at the next start.
        await conn.execute("DELETE FROM api_keys")
        monkeypatch.setenv("PAPAYYA_BOOTSTRAP_API_KEY", other := "cpk_test_" + uuid.uuid4().hex)
        async with started(dsn) as url:
            await works(url, other)
        assert await rows(dsn) == (1, 1)
    finally:
        await conn.close()
