"""OpenAI ``POST /v1/chat/completions``: ``chat.completion`` and ``chat.completion.chunk``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from fakellm import http, sse
from fakellm.errors import error_body
from fakellm.prompt import chat_prompt
from fakellm.state import FAKE
from fakellm.turn import Tokens, Turn, new_id

routes = web.RouteTableDef()
FINGERPRINT = "fp_fakellm"


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE]
    body = await http.json_body(request)
    prompt = chat_prompt(body)
    turn = await fake.take_turn("openai", prompt)
    head = {
        "id": new_id("chatcmpl-"),
        "created": int(time.time()),
        "model": prompt.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    calls = _tool_calls(turn)
    if prompt.stream:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = _chunks(head, turn, calls, with_usage, prompt.choices)
        cut = None
        if turn.interruption is not None:
            # Mid-stream, OpenAI sends an error object where a chunk would be.
            after, error = turn.interruption
            cut = after, (None, error_body("openai", error))
        return await sse.stream(request, events, fake.config.latency.per_chunk, cut, turn.cut)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": turn.text if turn.text or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    choices = [
        {"index": i, "message": message, "logprobs": None, "finish_reason": _finish(turn)}
        for i in range(prompt.choices)
    ]
    return http.json(
        {**head, "object": "chat.completion", "choices": choices, "usage": usage(turn.tokens)}
    )


def usage(tokens: Tokens) -> dict[str, Any]:
    """Chat usage: cached tokens count inside ``prompt_tokens``, reasoning inside completion."""
    prompt_details = {"cached_tokens": tokens.cached, "audio_tokens": 0}
    if tokens.cache_write:
        prompt_details["cache_write_tokens"] = tokens.cache_write
    return {
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.completion,
        "total_tokens": tokens.prompt + tokens.completion,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": tokens.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_calls(turn: Turn) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id or new_id("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in turn.calls
    ]


def _finish(turn: Turn) -> str:
    if turn.truncated:
        return "length"
    return "tool_calls" if turn.calls else "stop"


def _chunks(
    head: dict[str, Any],
    turn: Turn,
    calls: list[dict[str, Any]],
    with_usage: bool,
    choices: int = 1,
) -> Iterator[sse.Event]:
    base = {**head, "object": "chat.completion.chunk"}
    if with_usage:
        base["usage"] = None  # every chunk carries the key; only the extra last one a value
    for n in range(choices):

        def chunk(delta: dict[str, Any], finish: str | None = None, n: int = n) -> sse.Event:
            choice = {"index": n, "delta": delta, "logprobs": None, "finish_reason": finish}
            return None, {**base, "choices": [choice]}

        yield chunk({"role": "assistant", "content": "" if turn.text else None, "refusal": None})
        for piece in sse.words(turn.text):
            yield chunk({"content": piece})
        for index, call in enumerate(calls):
            function = call["function"]
            opening = {**call, "index": index, "function": {**function, "arguments": ""}}
            yield chunk({"tool_calls": [opening]})
            for piece in sse.slices(function["arguments"]):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, _finish(turn))
    if with_usage:
        yield None, {**base, "choices": [], "usage": usage(turn.tokens)}
    yield None, "[DONE]"
