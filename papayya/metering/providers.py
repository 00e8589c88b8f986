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
# The output cap fields each route's provider honours, the preferred one first. The gateway
# sends exactly one of them (the one it reserved for) and drops the others.
CAP_FIELDS: Final[dict[Kind, tuple[str, ...]]] = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
    "embeddings": (),
    "messages": ("max_tokens",),
}
_ANY_CAP: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# The providers' own limits: int32 for a cap, 128 answers for chat ``n``.
MAX_OUTPUT_CAP: Final = 2**31 - 1
MAX_CHOICES: Final = 128


class BadRequest(ValueError):
    """A request field the gateway must understand to meter the call, and cannot."""


@dataclass
class CallResult:
    """What a call used and asked for, read from its response. ``usage_reported``: the
    provider said what the call used (else the counts are zeros, not a measurement)."""

    tokens: Tokens = field(default_factory=Tokens)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage_reported: bool = False


def _positive(body: Mapping[str, Any], key: str, most: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise BadRequest(f"{key} must be an integer from 1 to {most}")
    return value


def output_cap(kind: Kind, body: Mapping[str, Any]) -> int | None:
    """The cap the call is reserved for: the route's preferred cap field that is set.
    ``BadRequest`` if a cap field holds something else than a positive integer."""
    if kind == "embeddings":
        return 0
    caps = [_positive(body, key, MAX_OUTPUT_CAP) for key in CAP_FIELDS[kind]]
    return next((cap for cap in caps if cap is not None), None)


def choices(kind: Kind, body: Mapping[str, Any]) -> int:
    """How many answers the call asks for (chat ``n``), each written up to the cap."""
    if kind != "chat":
        return 1
    return _positive(body, "n", MAX_CHOICES) or 1


def with_output_cap(kind: Kind, body: dict[str, Any], cap: int | None) -> dict[str, Any]:
    """``body`` with exactly one output cap, ``cap``, in the route's field (the one the caller
    used, if it is the route's), and none of the other cap fields; no cap field at all when
    ``cap`` is ``None``."""
    fields = CAP_FIELDS[kind]
    if not fields:
        return body
    key = next((k for k in fields if body.get(k) is not None), fields[0])
    out = {k: v for k, v in body.items() if k not in _ANY_CAP}
    if cap is not None:
        out[key] = cap
    return out


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
        return CallResult(anthropic_usage(data.get("usage")), calls, _has_usage(data))
    if kind == "responses":
        return CallResult(openai_usage(data.get("usage")), _response_calls(data), _has_usage(data))
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
    return CallResult(openai_usage(data.get("usage")), calls, _has_usage(data))


def _has_usage(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("usage"), Mapping)


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


# The events that end each kind of stream, and carry (or follow) its final usage.
_RESPONSE_ENDS: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})


class StreamObserver:
    """Reads usage and tool calls out of a stream as it passes; says which events to hide.
    ``ended``: the provider's last event went by (the stream is whole, whatever the caller
    does next); ``result.usage_reported``: its final usage did."""

    def __init__(self, kind: Kind, hide_usage_chunk: bool) -> None:
        self.kind = kind
        self.hide_usage_chunk = hide_usage_chunk
        self.result = CallResult()
        self.ended = False
        self._calls: dict[int, dict[str, Any]] = {}
        self._start_usage: Mapping[str, Any] | None = None
        self._delta_usage: dict[str, Any] = {}

    def observe(self, event: SseEvent) -> bool:
        """Record what ``event`` says; False if the caller must not see it."""
        if self.kind == "chat" and event.data.strip() == "[DONE]":
            self.ended = True
            return True
        data = event.json()
        if not isinstance(data, Mapping):
            return True
        if self.kind == "chat":
            return self._chat(data)
        if self.kind == "messages":
            self._message(data)
        elif self.kind == "responses" and data.get("type") in _RESPONSE_ENDS:
            # An incomplete response (cut at its cap) or a failed one is billed too.
            response = data.get("response") or {}
            self.result = CallResult(
                openai_usage(response.get("usage")),
                _response_calls(response),
                isinstance(response.get("usage"), Mapping),
            )
            self.ended = True
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
        if isinstance(data.get("usage"), Mapping):
            self.result.tokens = openai_usage(data["usage"])
            self.result.usage_reported = True
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
            # The final (cumulative) count; message_start's is a token or so.
            self._delta_usage.update(data.get("usage") or {})
            self.result.usage_reported = isinstance(data.get("usage"), Mapping)
        elif kind == "message_stop":
            self.ended = True
        self.result.tokens = merge_anthropic_stream(self._start_usage, self._delta_usage)

    def finish(self) -> CallResult:
        if self._calls:
            self.result.tool_calls = [
                {**call, "arguments": _json_or_text(call.get("arguments") or "{}")}
                for _, call in sorted(self._calls.items())
            ]
        return self.result


def stream_error(kind: Kind, message: str) -> bytes:
    """The event a provider sends when a stream fails midway, so that the caller's SDK
    raises instead of taking a cut answer for a whole one."""
    body: dict[str, Any]
    if kind == "messages":
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"
    if kind == "responses":
        body = {"type": "error", "code": "upstream_error", "message": message, "param": None}
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"
    error = {"message": message, "type": "server_error", "param": None, "code": "upstream_error"}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


def error_body(provider: Provider, status: int, code: str, message: str) -> dict[str, Any]:
    """An error the provider's SDK understands (``openai.APIStatusError`` and friends)."""
    if provider == "anthropic":
        return {"type": "error", "error": {"type": code, "message": message}}
    return {"error": {"message": message, "type": code, "param": None, "code": code}}
