"""Our ``Papayya`` / ``Client`` (the published SDK's shape) without a server: configuration,
and a client that works from plain code, inside a running event loop and across a fork."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket

import pytest

from papayya import Client, Papayya, PapayyaAPIError
from papayya.api import DEFAULT_BASE_URL, resolve_config
from papayya.errors import InvalidInput, PapayyaError


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_config_from_arguments_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAPAYYA_API_KEY", raising=False)
    monkeypatch.delenv("PAPAYYA_BASE_URL", raising=False)
    with pytest.raises(PapayyaAPIError) as refused:
        Papayya()
    assert refused.value.status == 401 and "PAPAYYA_API_KEY" in str(refused.value)
    assert resolve_config("cpk_a").base_url == DEFAULT_BASE_URL == "http://127.0.0.1:8080"
    monkeypatch.setenv("PAPAYYA_API_KEY", "cpk_env")
    monkeypatch.setenv("PAPAYYA_BASE_URL", "http://example.test:9")
    config = resolve_config()
    assert (config.api_key, config.base_url) == ("cpk_env", "http://example.test:9")
    assert resolve_config("cpk_arg", "http://other.test").base_url == "http://other.test"


def test_an_unreachable_server_raises_from_plain_code_and_inside_an_event_loop() -> None:
    url = closed_port()
    with Papayya("cpk_x", url) as p, pytest.raises(PapayyaError, match="cannot reach"):
        p.runs.list()

    async def inside() -> None:
        client = Client("cpk_x", url)
        try:
            with pytest.raises(PapayyaError, match="cannot reach"):
                client.get_status("run_x")
        finally:
            client.close()

    asyncio.run(inside())


def _call_in_child(client: Client, answers: multiprocessing.Queue[str]) -> None:
    try:
        client.get_status("run_x")
    except PapayyaError as exc:
        answers.put(type(exc).__name__)


def test_a_forked_child_uses_the_client_with_a_loop_of_its_own() -> None:
    client = Client("cpk_x", closed_port())
    with pytest.raises(PapayyaError):
        client.get_status("run_x")  # the parent's loop is running
    context = multiprocessing.get_context("fork")
    answers: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_call_in_child, args=(client, answers))
    child.start()
    assert answers.get(timeout=30) == "PapayyaError"
    child.join(30)
    assert child.exitcode == 0
    client.close()
    client.close()  # closing twice is harmless
    with pytest.raises(PapayyaError, match="closed"):
        client.get_status("run_x")


def test_a_base_url_must_be_http() -> None:
    with pytest.raises(InvalidInput, match="http"):
        Papayya("cpk_x", "ftp://example.test")
