"""Local-path tests: agent scripts run as subprocesses of their own (the user's process),
against a real server or database and the fake provider."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
RESEARCH_AGENT: Final = ROOT / "examples" / "local" / "research_agent.py"
# The variables that pick the SDK's mode or a provider; each test sets the ones it means.
_MODE_VARS: Final = (
    "PAPAYYA_BASE_URL", "PAPAYYA_API_KEY", "PAPAYYA_DATABASE_URL", "PAPAYYA_PROJECT",
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
)  # fmt: skip


def script_env(**values: str) -> dict[str, str]:
    """The environment of a script: this one without mode variables, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in _MODE_VARS}
    env["PYTHONPATH"] = str(ROOT)
    env.update(values)
    return env


async def start(
    script: Path | str, *args: str, env: Mapping[str, str], warnings_are_errors: bool = True
) -> asyncio.subprocess.Process:
    """Start ``script`` with this interpreter (``-W error``: any warning fails it)."""
    flags = ["-W", "error"] if warnings_are_errors else []
    return await asyncio.create_subprocess_exec(
        sys.executable, *flags, str(script), *args, env=dict(env), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_script(
    script: Path | str, *args: str, env: Mapping[str, str], timeout: float = 120
) -> tuple[int, str, str]:
    """Run ``script`` to its end: its exit code, stdout and stderr."""
    proc = await start(script, *args, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def read_until(proc: asyncio.subprocess.Process, text: str, timeout: float = 120) -> str:
    """Stdout of ``proc`` up to the first line holding ``text``."""
    assert proc.stdout is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
        if not line:
            raise AssertionError(f"the script ended before printing {text!r}: {''.join(seen)}")
        seen.append(line)
        if text in line:
            return "".join(seen)


CANCELLABLE: Final = """
import sys, time
from papayya import papayya
from papayya.errors import RunCancelled

with papayya() as client:
    run = client.run("canceller", run_id=sys.argv[1])
    run.task("first", lambda: 1)()
    print("started", flush=True)
    try:
        while True:  # user code that never checkpoints: only the heartbeat can tell it
            time.sleep(0.05)
    except RunCancelled:
        print("cancelled", flush=True)
"""

TWO_CALLS: Final = """
import sys
import openai
from papayya import papayya

with papayya() as client:
    run = client.run("spender", run_id=sys.argv[1], budget_usd="0.002")
    oa = run.openai()
    ask = [{"role": "user", "content": "hi"}]
    oa.chat.completions.create(model="gpt-4o", max_tokens=50, messages=ask)
    print("first call", flush=True)
    try:
        oa.chat.completions.create(model="gpt-4o", max_tokens=1000, messages=ask)
    except openai.APIStatusError as exc:
        print(f"refused {exc.status_code}", flush=True)
"""


def write_script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def readme_local_sample() -> str:
    """The Python sample of the README's local section, as a user would copy it."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### 1. Checkpoint a local agent") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]
