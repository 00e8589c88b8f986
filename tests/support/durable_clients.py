"""The two clients a durable scenario runs under: the published SDK (``Published``) and our
package, each in an interpreter of its own against the same server, so that one script holds
both to one behaviour. Both read ``PAPAYYA_BASE_URL`` and ``PAPAYYA_API_KEY``; both import
``from papayya.durable import papayya``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from tests.support.api import Api
from tests.support.published import REPO


class ScriptClient(Protocol):
    """Runs a script that prints its answer as JSON on its last line; returns the answer."""

    async def script(self, code: str, **env: str) -> Any: ...


@dataclass(frozen=True)
class Ours:
    """Our package, from this checkout, run as a user's script would run it."""

    url: str
    key: str
    home: Path

    async def script(self, code: str, **env: str) -> Any:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(self.home),
                "PYTHONPATH": str(REPO),
                "PAPAYYA_API_KEY": self.key,
                "PAPAYYA_BASE_URL": self.url,
                **env,
            },
            cwd=self.home,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{err.decode()}"
        lines = out.decode().strip().splitlines()
        return json.loads(lines[-1]) if lines else None


async def durable_run(api: Api, http: aiohttp.ClientSession, run_id: str) -> dict[str, Any]:
    """The durable run as the server holds it (``GET /v1/durable/runs/{id}``)."""
    async with http.get(f"{api.url}/v1/durable/runs/{run_id}", headers=api.headers()) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())
