"""Fuzz every operation in /openapi.json: no input may produce a 5xx, and every error body is
the documented JSON shape."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Api

# Server-sent-event streams never end by themselves: they are tested in test_api_sse.py.
STREAMS = r"(/events$|/v1/events$)"


@pytest.mark.slow
async def test_no_operation_answers_5xx(api: Api, http: Any, tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    command = [
        str(st), "run", f"{api.url}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                    "error_body_is_well_formed",
        "--header", f"X-Api-Key: {api.key}",
        "--max-examples", "8",
        "--exclude-path-regex", STREAMS,
        "--request-timeout", "10",
        "--seed", "1",
        "--generation-deterministic",
        "--continue-on-failure",
    ]  # fmt: skip
    # Our own check (every error body is the documented JSON) comes from a hooks module.
    root = str(Path(__file__).parents[2])
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-6000:]
