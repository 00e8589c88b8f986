"""Credentials in headers that are not UTF-8 (or not ASCII) are refused like any wrong
credential, never a 5xx (docs/security.md, "API keys", "Run tokens", "Webhooks"). aiohttp
hands such header bytes over as lone surrogates: an API key of them used to fail hashing, a
run token of them ``compare_digest``, a webhook signature of them its encoding, each a 500."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.serving import call, serving


async def raw_request(
    url: str, method: str, headers: list[bytes], body: bytes = b""
) -> tuple[int, bytes]:
    """A request whose header bytes are sent exactly as given."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [
        f"{method} {parts.path} HTTP/1.1".encode(),
        f"Host: {parts.netloc}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        *headers,
    ]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_text, _, content = answer.partition(b"\r\n\r\n")
    return int(head_text.split(b" ", 2)[1]), content


async def test_credentials_that_are_not_utf8_are_refused_not_a_500(
    dsn: str, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    async with serving(dsn, monkeypatch) as api:
        status, _ = await call(
            http, api, "POST", "/v1/agents", {"name": "w", "slug": "w", "config": {}}
        )
        assert status == 201
        status, webhook = await call(http, api, "POST", "/v1/agents/w/webhooks", {"name": "h"})
        assert status == 201
        trigger = f"/v1/webhooks/{webhook['id']}/trigger"
        now = str(int(time.time())).encode()  # in time: the signature itself is compared
        signed = [b"webhook-id: msg_1", b"webhook-timestamp: " + now]
        cases = [
            ("GET", "/v1/agents", [b"X-Api-Key: cpk_\xff\xfe000000000000000000"], 401),
            ("GET", "/v1/agents", [b"Authorization: Bearer cpk_\xff\xfe00000000000000"], 401),
            ("GET", "/v1/agents", [b"X-Api-Key: cpk_\xc3\xa900000000000000000000"], 401),
            ("GET", "/v1/runtime/run", [b"Authorization: Bearer prt_r.1.\xff\xfe"], 401),
            ("GET", "/v1/runtime/run", [b"Authorization: Bearer prt_r.1.\xc3\xa9"], 401),
            (
                "POST",
                "/v1/llm/openai/chat/completions",
                [b"Authorization: Bearer prt_r.1.\xc3\xa9"],
                401,
            ),
            ("POST", "/v1/llm/anthropic/v1/messages", [b"x-api-key: prt_r.1.\xff"], 401),
            ("POST", trigger, [*signed, b"webhook-signature: v1,\xff\xfe"], 401),
            (
                "POST",
                trigger,
                [
                    b"webhook-id: msg_\xff",
                    b"webhook-timestamp: " + now,
                    b"webhook-signature: v1,AAAA",
                ],
                401,
            ),
            (
                "POST",
                trigger,
                [b"webhook-id: msg_1", b"webhook-timestamp: 1\xff", b"webhook-signature: v1,AAAA"],
                401,
            ),
        ]
        for method, path, headers, wanted in cases:
            status, body = await raw_request(api.url + path, method, headers, b"{}")
            assert status == wanted, (path, headers, body)
            assert isinstance(json.loads(body)["error"]["message"], str), body
