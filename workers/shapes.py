"""The two API shapes the built-in loop speaks: OpenAI chat completions and Anthropic
messages. Pure: a request body from the conversation, a turn from a response body.

Requests are built only from the conversation so far and the configuration, and turns only
from the response bytes, so a re-executed loop rebuilds byte-for-byte the requests it made
before: their fingerprints match the recording and the meter answers them from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from papayya.metering import providers as pv
from workers.tools import ToolResult, ToolSpec, text_of

ANTHROPIC_MAX_TOKENS: Final = 4096


@dataclass(frozen=True)
class Call:
    """One tool call the model asked for."""

    call_id: str | None
    name: str
    arguments: Any
    bad_arguments: str | None = None  # the arguments were not JSON: the call is not run


@dataclass(frozen=True)
class Turn:
    text: str
    calls: list[Call]
    message: dict[str, Any]  # the assistant's message, as the next request repeats it


@dataclass(frozen=True)
class Settings:
    model: str
    system: str
    tools: list[ToolSpec] = field(default_factory=list)
    temperature: float | None = None
    output_schema: dict[str, Any] | None = None


class Shape(Protocol):
    provider: pv.Provider
    route: str

    def request(self, settings: Settings, messages: list[dict[str, Any]]) -> dict[str, Any]: ...

    def turn(self, response: Any) -> Turn: ...

    def results(self, done: list[tuple[Call, ToolResult]]) -> list[dict[str, Any]]: ...


def first_message(user: str) -> dict[str, Any]:
    return {"role": "user", "content": user}


class OpenAIChat:
    provider: pv.Provider = "openai"
    route = "chat/completions"

    def request(self, settings: Settings, messages: list[dict[str, Any]]) -> dict[str, Any]:
        system = [{"role": "system", "content": settings.system}] if settings.system else []
        body: dict[str, Any] = {"model": settings.model, "messages": system + messages}
        if settings.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in settings.tools
            ]
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.output_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": settings.output_schema},
            }
        return body

    def turn(self, response: Any) -> Turn:
        message = response["choices"][0]["message"]
        asked = message.get("tool_calls") or []
        calls = []
        for call in asked:
            function = call.get("function") or {}
            raw = function.get("arguments") or "{}"
            try:
                calls.append(Call(call.get("id"), str(function.get("name")), json.loads(raw)))
            except ValueError:
                calls.append(Call(call.get("id"), str(function.get("name")), raw, raw))
        said: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if asked:
            said["tool_calls"] = asked
        return Turn(message.get("content") or "", calls, said)

    def results(self, done: list[tuple[Call, ToolResult]]) -> list[dict[str, Any]]:
        return [
            {"role": "tool", "tool_call_id": call.call_id, "content": text_of(result)}
            for call, result in done
        ]


class AnthropicMessages:
    provider: pv.Provider = "anthropic"
    route = "v1/messages"

    def request(self, settings: Settings, messages: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": settings.model,
            "max_tokens": ANTHROPIC_MAX_TOKENS,
            "messages": messages,
        }
        system = settings.system
        if settings.output_schema is not None:  # the messages API has no schema mode: ask
            schema = json.dumps(settings.output_schema, sort_keys=True)
            system = f"{system}\n\nAnswer with one JSON value only, valid against: {schema}"
        if system.strip():
            body["system"] = system.strip()
        if settings.tools:
            body["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in settings.tools
            ]
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        return body

    def turn(self, response: Any) -> Turn:
        content = response.get("content") or []
        text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
        calls = [
            Call(b.get("id"), str(b.get("name")), b.get("input") or {})
            for b in content
            if b.get("type") == "tool_use"
        ]
        return Turn(text, calls, {"role": "assistant", "content": content})

    def results(self, done: list[tuple[Call, ToolResult]]) -> list[dict[str, Any]]:
        blocks = [
            {
                "type": "tool_result",
                "tool_use_id": call.call_id,
                "content": text_of(result),
                "is_error": result.error is not None,
            }
            for call, result in done
        ]
        return [{"role": "user", "content": blocks}] if blocks else []


def shape_for(provider: pv.Provider) -> Shape:
    return AnthropicMessages() if provider == "anthropic" else OpenAIChat()


def provider_of(model: str) -> pv.Provider:
    """The API shape of ``model``: its provider in the price table, else by its name."""
    from genai_prices import data_snapshot

    try:
        found, _ = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
        if found.id == "anthropic":
            return "anthropic"
    except LookupError:
        if model.startswith("claude"):
            return "anthropic"
    return "openai"
