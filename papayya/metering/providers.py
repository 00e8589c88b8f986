"""What differs between provider APIs: where the output cap lives, how usage and tool calls
are reported (whole or streamed), and what an error looks like."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from papayya.metering.sse import SseEvent
from papayya.pricing import Tokens
from papayya.usage import anthropic_usage, merge_anthropic_stream, openai_usage

Provider = Literal["openai", "anthropic"]
Kind = Literal["chat", "responses", "embeddings", "messages"]

ROUTES: Final[dict[tuple[Provider, str], Kind]] = {
    ("openai", "chat/completions"): "chat",
    ("openai", "responses"): "responses",
    ("openai", "embeddings"): "embeddings",
    ("anthropic", "v1/messages"): "messages",
}
_CAP_FIELD: Final[dict[Kind, str | None]] = {
    "chat": "max_completion_tokens",
    "responses": "max_output_tokens",
    "embeddings": None,
    "messages": "max_tokens",
}


@dataclass
class CallResult:
    """What a call used and asked for, read from its response."""

    tokens: Tokens = field(default_factory=Tokens)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def output_cap(kind: Kind, body: Mapping[str, Any]) -> int | None:
    if kind == "embeddings":
        return 0
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def with_output_cap(kind: Kind, body: dict[str, Any], cap: int) -> dict[str, Any]:
    key = _CAP_FIELD[kind]
    return body if key is None else {**body, key: cap}


def message_count(kind: Kind, body: Mapping[str, Any]) -> int:
    value = body.get("messages") if kind in ("chat", "messages") else body.get("input")
    return len(value) if isinstance(value, list) else 1


def prepare_stream(kind: Kind, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Ask for usage in a streamed chat completion; True if the caller did not ask, so the
    extra usage chunk must be hidden from it."""
    if kind != "chat" or not body.get("stream"):
        return body, False
    options = body.get("stream_options")
    if isinstance(options, Mapping) and options.get("include_usage"):
        return body, False
    return {**body, "stream_options": {**(options or {}), "include_usage": True}}, True


def parse_response(kind: Kind, data: Any) -> CallResult:
    if not isinstance(data, Mapping):
        return CallResult()
    if kind == "messages":
        calls = [
            {"id": b.get("id"), "name": b.get("name"), "arguments": b.get("input")}
            for b in data.get("content") or []
            if isinstance(b, Mapping) and b.get("type") == "tool_use"
        ]
        return CallResult(anthropic_usage(data.get("usage")), calls)
    if kind == "responses":
        return CallResult(openai_usage(data.get("usage")), _response_calls(data))
    calls = []
    for choice in data.get("choices") or []:
        message = choice.get("message") if isinstance(choice, Mapping) else None
        for call in (message or {}).get("tool_calls") or []:
            function = call.get("function") or {}
            calls.append(
                {
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _json_or_text(function.get("arguments")),
                }
            )
    return CallResult(openai_usage(data.get("usage")), calls)


def _response_calls(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": item.get("call_id"),
            "name": item.get("name"),
            "arguments": _json_or_text(item.get("arguments")),
        }
        for item in response.get("output") or []
        if isinstance(item, Mapping) and item.get("type") == "function_call"
    ]


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class StreamObserver:
    """Reads usage and tool calls out of a stream as it passes; says which events to hide."""

    def __init__(self, kind: Kind, hide_usage_chunk: bool) -> None:
        self.kind = kind
        self.hide_usage_chunk = hide_usage_chunk
        self.result = CallResult()
        self._calls: dict[int, dict[str, Any]] = {}
        self._start_usage: Mapping[str, Any] | None = None
        self._delta_usage: dict[str, Any] = {}

    def observe(self, event: SseEvent) -> bool:
        """Record what ``event`` says; False if the caller must not see it."""
        data = event.json()
        if not isinstance(data, Mapping):
            return True
        if self.kind == "chat":
            return self._chat(data)
        if self.kind == "messages":
            self._message(data)
        elif self.kind == "responses" and data.get("type") == "response.completed":
            response = data.get("response") or {}
            self.result = CallResult(openai_usage(response.get("usage")), _response_calls(response))
        return True

    def _chat(self, data: Mapping[str, Any]) -> bool:
        for choice in data.get("choices") or []:
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                slot = self._calls.setdefault(call.get("index", 0), {"arguments": ""})
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["name"] = function["name"]
                slot["arguments"] += function.get("arguments") or ""
        if data.get("usage"):
            self.result.tokens = openai_usage(data["usage"])
            if not data.get("choices") and self.hide_usage_chunk:
                return False
        return True

    def _message(self, data: Mapping[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            self._start_usage = (data.get("message") or {}).get("usage")
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._calls[data.get("index", 0)] = {
                    "id": block.get("id"),
                    "name": block.get("name"),
                    "arguments": "",
                }
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            slot = self._calls.get(data.get("index", 0))
            if slot is not None and delta.get("type") == "input_json_delta":
                slot["arguments"] += delta.get("partial_json") or ""
        elif kind == "message_delta":
            self._delta_usage.update(data.get("usage") or {})
        self.result.tokens = merge_anthropic_stream(self._start_usage, self._delta_usage)

    def finish(self) -> CallResult:
        if self._calls:
            self.result.tool_calls = [
                {**call, "arguments": _json_or_text(call.get("arguments") or "{}")}
                for _, call in sorted(self._calls.items())
            ]
        return self.result


def error_body(provider: Provider, status: int, code: str, message: str) -> dict[str, Any]:
    """An error the provider's SDK understands (``openai.APIStatusError`` and friends)."""
    if provider == "anthropic":
        return {"type": "error", "error": {"type": code, "message": message}}
    return {"error": {"message": message, "type": code, "param": None, "code": code}}
