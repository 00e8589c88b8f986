"""Anthropic ``POST /v1/messages`` (a ``message`` or its event stream) and ``count_tokens``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from fakellm import http, sse
from fakellm.errors import ProviderError, error_body
from fakellm.prompt import messages_prompt
from fakellm.state import FAKE
from fakellm.turn import Tokens, Turn, new_id, prompt_tokens

routes = web.RouteTableDef()
_DELTA_USAGE = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


@routes.post("/v1/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    _require_version(request)
    fake = request.app[FAKE]
    prompt = messages_prompt(await http.json_body(request))
    turn = await fake.take_turn("anthropic", prompt)
    message = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": _content(turn),
        "stop_reason": _stop_reason(turn),
        "stop_sequence": None,
        "usage": usage(turn.tokens),
    }
    if prompt.stream:
        cut = None
        if turn.interruption is not None:
            after, error = turn.interruption
            cut = after, ("error", error_body("anthropic", error))
        per_chunk = fake.config.latency.per_chunk
        return await sse.stream(request, _events(message), per_chunk, cut, turn.cut)
    return http.json(message)


@routes.post("/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    _require_version(request)
    prompt = messages_prompt(await http.json_body(request), counting=True)
    return http.json({"input_tokens": prompt_tokens(prompt, request.app[FAKE].config)})


def usage(tokens: Tokens) -> dict[str, Any]:
    """Anthropic usage: ``input_tokens`` excludes the tokens read from or written to cache."""
    return {
        "input_tokens": tokens.uncached_input,
        "cache_creation_input_tokens": tokens.cache_write,
        "cache_read_input_tokens": tokens.cached,
        "cache_creation": {
            "ephemeral_5m_input_tokens": tokens.cache_write,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": tokens.completion,
        "service_tier": "standard",
    }


def _require_version(request: web.Request) -> None:
    if "anthropic-version" not in request.headers:
        raise ProviderError(400, "anthropic-version: header is required")


def _content(turn: Turn) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.text or not turn.calls:
        blocks.append({"type": "text", "text": turn.text})
    for call in turn.calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id or new_id("toolu_"),
                "name": call.name,
                "input": json.loads(call.arguments),
            }
        )
    return blocks


def _stop_reason(turn: Turn) -> str:
    if turn.truncated:
        return "max_tokens"
    return "tool_use" if turn.calls else "end_turn"


def _events(message: dict[str, Any]) -> Iterator[sse.Event]:
    """message_start, per block start/deltas/stop, message_delta with the final usage, stop."""

    def event(kind: str, **fields: Any) -> sse.Event:
        return kind, {"type": kind, **fields}

    # As the real API does, the start reports a token or so of output; message_delta then
    # carries the cumulative total, which replaces it (a client that adds them over-counts).
    started = {**message["usage"], "output_tokens": min(1, message["usage"]["output_tokens"])}
    opening = {**message, "content": [], "stop_reason": None, "usage": started}
    yield event("message_start", message=opening)
    yield event("ping")
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield event("content_block_start", index=index, content_block={**block, "text": ""})
            for piece in sse.words(block["text"]):
                yield event(
                    "content_block_delta", index=index, delta={"type": "text_delta", "text": piece}
                )
        else:
            yield event("content_block_start", index=index, content_block={**block, "input": {}})
            for piece in ["", *sse.slices(json.dumps(block["input"]))]:
                yield event(
                    "content_block_delta",
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": piece},
                )
        yield event("content_block_stop", index=index)
    final = {k: message["usage"][k] for k in _DELTA_USAGE}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield event("message_delta", delta=delta, usage=final)
    yield event("message_stop")
