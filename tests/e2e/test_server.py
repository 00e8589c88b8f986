"""``papayya server`` as a user starts it: a real process, a real HTTP client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from papayya import __version__
from tests.support.operator import work_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def papayya(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("server did not start listening")


@pytest.fixture
def embedded_server() -> Iterator[str]:
    """A server with no database configured: it must start an embedded Postgres."""
    with work_dir() as tmp_path:
        yield from _embedded_server(tmp_path)


def _embedded_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPAYYA_")}
    env["PAPAYYA_DATA_DIR"] = str(tmp_path / "data")
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "server", "--port", str(port)],
            env=env,
            stdout=out,
        )
        try:
            wait_for_port(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
    # First start on an empty database: a default project and its key, printed once.
    assert "API key (shown once): cpk_" in log.read_text()
    # The process runtime is the operator's choice, off unless set, and the server says so.
    assert "process runtime: off (PAPAYYA_PROCESS_RUNTIME=off)" in log.read_text()


@pytest.mark.slow
async def test_server_with_embedded_postgres_answers_health(embedded_server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{embedded_server}/healthz") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["status"] == "ok" and body["installation"].startswith("ins_")
            assert resp.headers["X-Request-Id"]
        async with http.get(f"{embedded_server}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{embedded_server}/nope", headers={"X-Request-Id": "r-1"}) as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["error"]["code"] == "not_found"
            assert resp.headers["X-Request-Id"] == "r-1"


def test_version_and_help() -> None:
    out = papayya("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    helped = papayya("--help")
    assert helped.returncode == 0 and "server" in helped.stdout and "db" in helped.stdout


def test_db_migrate_applies_then_reports_up_to_date(empty_dsn: str) -> None:
    env = {**os.environ, "PAPAYYA_DATABASE_URL": empty_dsn}
    first = papayya("db", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_event_store" in first.stdout
    second = papayya("db", "migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_cli_bad_input_exits_non_zero() -> None:
    bad_port = papayya("server", "--port", "99999")
    assert bad_port.returncode == 2 and "Invalid value" in bad_port.stderr
    unreachable = papayya(
        "db",
        "migrate",
        env={**os.environ, "PAPAYYA_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
    )
    assert unreachable.returncode == 1 and "cannot reach the database" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_dev_fake_llm_serves_the_openai_sdk() -> None:
    import openai

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "dev", "fake-llm", "--port", str(port),
         "--text", "canned"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, proc)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-x") as client:
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        assert reply.choices[0].message.content == "canned"
    finally:
        proc.terminate()
        proc.wait(10)
