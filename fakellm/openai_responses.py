"""OpenAI ``POST /v1/responses``: a ``response`` object, or its lifecycle of stream events."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from fakellm import http, sse
from fakellm.prompt import responses_prompt
from fakellm.state import FAKE
from fakellm.turn import Tokens, Turn, new_id

routes = web.RouteTableDef()


@routes.post("/v1/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE]
    body = await http.json_body(request)
    prompt = responses_prompt(body)
    turn = await fake.take_turn("openai", prompt)
    shell = _shell(body, prompt.model)
    items = _output(turn)
    if prompt.stream:
        events = _events(shell, turn, items)
        per_chunk = fake.config.latency.per_chunk
        return await sse.stream(request, events, per_chunk, _cut(turn), turn.cut)
    return http.json(_finished(shell, turn, items))


def usage(tokens: Tokens) -> dict[str, Any]:
    return {
        "input_tokens": tokens.prompt,
        "input_tokens_details": {
            "cached_tokens": tokens.cached,
            "cache_write_tokens": tokens.cache_write,
        },
        "output_tokens": tokens.completion,
        "output_tokens_details": {"reasoning_tokens": tokens.reasoning},
        "total_tokens": tokens.prompt + tokens.completion,
    }


def _cut(turn: Turn) -> tuple[int, sse.Event] | None:
    """A stream cut short ends with an ``error`` event, numbered like the events before it."""
    if turn.interruption is None:
        return None
    after, error = turn.interruption
    return after, (
        "error",
        {
            "type": "error",
            "code": error.openai_code,
            "message": error.message,
            "param": error.param,
            "sequence_number": after,
        },
    )


def _shell(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The response object while in progress: the request's settings echoed, no output yet."""
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
    }


def _finished(shell: dict[str, Any], turn: Turn, items: list[dict[str, Any]]) -> dict[str, Any]:
    done = {"status": "completed", "completed_at": int(time.time())}
    if turn.truncated:
        done = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    return {**shell, **done, "output": items, "usage": usage(turn.tokens)}


def _output(turn: Turn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if turn.text or not turn.calls:
        text = {"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}
        items.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "incomplete" if turn.truncated else "completed",
                "role": "assistant",
                "content": [text],
            }
        )
    for call in turn.calls:
        items.append(
            {
                "id": new_id("fc_"),
                "type": "function_call",
                "status": "completed",
                "call_id": call.id or new_id("call_"),
                "name": call.name,
                "arguments": call.arguments,
            }
        )
    return items


def _events(shell: dict[str, Any], turn: Turn, items: list[dict[str, Any]]) -> Iterator[sse.Event]:
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> sse.Event:
        return kind, {"type": kind, "sequence_number": next(numbers), **fields}

    yield event("response.created", response=shell)
    yield event("response.in_progress", response=shell)
    for index, item in enumerate(items):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield event("response.content_part.added", **where, content_index=0, part=part)
            for piece in sse.words(turn.text):
                yield event(
                    "response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[]
                )
            yield event(
                "response.output_text.done", **where, content_index=0, text=turn.text, logprobs=[]
            )
            yield event(
                "response.content_part.done",
                **where,
                content_index=0,
                part={**part, "text": turn.text},
            )
        else:
            yield event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in sse.slices(item["arguments"]):
                yield event("response.function_call_arguments.delta", **where, delta=piece)
            yield event(
                "response.function_call_arguments.done",
                **where,
                name=item["name"],
                arguments=item["arguments"],
            )
        yield event("response.output_item.done", output_index=index, item=item)
    final = _finished(shell, turn, items)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    yield event(kind, response=final)
