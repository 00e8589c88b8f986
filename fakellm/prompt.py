"""Requests of the three generation APIs, reduced to what the fake model decides on.

Validation is the cheap part of the real APIs' (missing ``model``, ``messages`` or
``max_tokens``): enough that a client sending a malformed request fails here as it would there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fakellm.errors import ProviderError


@dataclass(frozen=True)
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Prompt:
    """What the model sees: ``choice`` is "auto", "none", "required" or a tool's name."""

    model: str
    texts: tuple[str, ...]
    last_user_text: str
    tools: tuple[Tool, ...]
    choice: str
    has_tool_result: bool
    max_tokens: int | None
    stream: bool
    # How many answers to write (chat ``n``); each counts its output tokens.
    choices: int = 1


def chat_prompt(body: dict[str, Any]) -> Prompt:
    """``POST /v1/chat/completions``."""
    model = _openai_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProviderError(
            400,
            "Missing required parameter: 'messages'.",
            code="missing_required_parameter",
            param="messages",
        )
    tools = tuple(
        Tool(str(fn.get("name", "")), _schema(fn.get("parameters")))
        for tool in _dicts(body.get("tools"))
        if tool.get("type", "function") == "function"
        for fn in [tool.get("function") or {}]
    )
    users = [m for m in _dicts(messages) if m.get("role") == "user"]
    return Prompt(
        model=model,
        texts=tuple(strings([messages, body.get("tools")])),
        last_user_text=_text(users[-1].get("content")) if users else "",
        tools=tools,
        choice=_openai_choice(body.get("tool_choice"), nested=True),
        has_tool_result=any(m.get("role") in ("tool", "function") for m in _dicts(messages)),
        max_tokens=_int(body.get("max_completion_tokens", body.get("max_tokens"))),
        stream=body.get("stream") is True,
        choices=_int(body.get("n")) or 1,
    )


def responses_prompt(body: dict[str, Any]) -> Prompt:
    """``POST /v1/responses``; ``input`` is a string or a list of items."""
    model = _openai_model(body)
    raw = body.get("input", "")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else list(_dicts(raw))
    users = [i for i in items if i.get("role") == "user"]
    tools = tuple(
        Tool(str(t.get("name", "")), _schema(t.get("parameters")))
        for t in _dicts(body.get("tools"))
        if t.get("type") == "function"
    )
    return Prompt(
        model=model,
        texts=tuple(strings([body.get("instructions"), raw, body.get("tools")])),
        last_user_text=_text(users[-1].get("content")) if users else "",
        tools=tools,
        choice=_openai_choice(body.get("tool_choice"), nested=False),
        has_tool_result=any(i.get("type") == "function_call_output" for i in items),
        max_tokens=_int(body.get("max_output_tokens")),
        stream=body.get("stream") is True,
    )


def messages_prompt(body: dict[str, Any], *, counting: bool = False) -> Prompt:
    """``POST /v1/messages`` (and ``count_tokens``, which needs no ``max_tokens``)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ProviderError(400, "model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ProviderError(400, "messages: Field required")
    if not counting and _int(body.get("max_tokens")) is None:
        raise ProviderError(400, "max_tokens: Field required")
    users = [m for m in _dicts(messages) if m.get("role") == "user" and _text(m.get("content"))]
    tools = tuple(
        Tool(str(t.get("name", "")), _schema(t.get("input_schema")))
        for t in _dicts(body.get("tools"))
        if t.get("type", "custom") == "custom" and "input_schema" in t
    )
    blocks = [b for m in _dicts(messages) for b in _dicts(m.get("content"))]
    return Prompt(
        model=body["model"],
        texts=tuple(strings([body.get("system"), messages, body.get("tools")])),
        last_user_text=_text(users[-1].get("content")) if users else "",
        tools=tools,
        choice=_anthropic_choice(body.get("tool_choice")),
        has_tool_result=any(b.get("type") == "tool_result" for b in blocks),
        max_tokens=_int(body.get("max_tokens")),
        stream=body.get("stream") is True,
    )


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, in order: the text that prompt tokens are counted from."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def _openai_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProviderError(400, "you must provide a model parameter", param="model")
    return model


def _openai_choice(choice: Any, *, nested: bool) -> str:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        holder = choice.get("function") if nested else choice
        if isinstance(holder, dict) and isinstance(holder.get("name"), str):
            return str(holder["name"])
    return "auto"


def _anthropic_choice(choice: Any) -> str:
    if not isinstance(choice, dict):
        return "auto"
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        return str(choice["name"])
    return {"any": "required", "none": "none"}.get(str(kind), "auto")


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    parts = [p.get("text") for p in _dicts(content) if p.get("type") in _TEXT_PARTS]
    return "\n".join(p for p in parts if isinstance(p, str))


_TEXT_PARTS = ("text", "input_text", "output_text")


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def _schema(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
