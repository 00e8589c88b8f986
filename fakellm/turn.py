"""The fake model itself: a pure function from a prompt (and maybe a scripted reply) to a turn.

Deterministic on purpose, so agent tests can predict every step: offered tools and no tool
result yet → call the first tool; otherwise answer with the configured text.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, replace
from typing import Any

from fakellm.config import Cut, FakeConfig, Reply, ToolCall, Usage
from fakellm.errors import ProviderError
from fakellm.prompt import Prompt, Tool

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Call:
    """A tool call with its arguments already JSON-encoded, as every API sends them."""

    id: str | None
    name: str
    arguments: str


@dataclass(frozen=True)
class Tokens:
    """Resolved counts, in OpenAI's convention (see ``config.Usage``)."""

    prompt: int
    completion: int
    cached: int = 0
    reasoning: int = 0
    cache_write: int = 0

    @property
    def uncached_input(self) -> int:
        """Anthropic's ``input_tokens``: the prompt less what was read from or written to cache."""
        return max(0, self.prompt - self.cached - self.cache_write)


@dataclass(frozen=True)
class Turn:
    """What the model says; ``interruption`` is (events sent, error) for a stream cut short."""

    text: str
    calls: tuple[Call, ...]
    tokens: Tokens
    truncated: bool = False
    interruption: tuple[int, ProviderError] | None = None
    cut: Cut | None = None


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(prompt: Prompt, config: FakeConfig) -> int:
    if config.usage.prompt_tokens is not None:
        return config.usage.prompt_tokens
    return max(1, sum(count_tokens(t) for t in prompt.texts))


def decide(prompt: Prompt, config: FakeConfig, reply: Reply | None = None) -> Turn:
    """The model's turn for ``prompt``: ``reply`` if scripted, else the default behaviour."""
    if reply is not None and (reply.text is not None or reply.tool_calls):
        text = reply.text or ""
        calls = tuple(_scripted_call(c) for c in reply.tool_calls)
    else:
        tool = _tool_to_call(prompt)
        text = "" if tool else (prompt.last_user_text if config.echo else config.text)
        calls = (Call(None, tool.name, _arguments(tool, config)),) if tool else ()
    usage = reply.usage.over(config.usage) if reply and reply.usage else config.usage
    turn = _bounded(prompt, text, calls, usage, config, reply is not None and reply.past_cap)
    return turn if reply is None or reply.cut is None else replace(turn, cut=reply.cut)


def _bounded(
    prompt: Prompt,
    text: str,
    calls: tuple[Call, ...],
    usage: Usage,
    config: FakeConfig,
    past_cap: bool = False,
) -> Turn:
    """Counts for the turn; output over ``max_tokens`` is cut there, as the real APIs do
    (unless ``past_cap``). ``choices`` answers (chat ``n``) each count their output."""
    reasoning = usage.reasoning_tokens or 0
    produced = count_tokens(text) + sum(count_tokens(c.name + c.arguments) for c in calls)
    completion = usage.completion_tokens
    if completion is None:
        completion = max(1, produced) + reasoning
    truncated = not past_cap and prompt.max_tokens is not None and completion > prompt.max_tokens
    if truncated and prompt.max_tokens is not None:
        completion = prompt.max_tokens
        text = text[: max(0, completion - reasoning) * CHARS_PER_TOKEN]
    cached, cache_write = usage.cached_tokens or 0, usage.cache_write_tokens or 0
    # A computed prompt holds at least the cache counts a test configured.
    computed_prompt = max(prompt_tokens(prompt, config), cached + cache_write)
    tokens = Tokens(
        prompt=usage.prompt_tokens if usage.prompt_tokens is not None else computed_prompt,
        completion=completion * prompt.choices,
        cached=cached,
        reasoning=min(reasoning, completion),
        cache_write=cache_write,
    )
    return Turn(text, calls, tokens, truncated)


def _tool_to_call(prompt: Prompt) -> Tool | None:
    if not prompt.tools or prompt.choice == "none":
        return None
    named = [t for t in prompt.tools if t.name == prompt.choice]
    if named:
        return named[0]
    # A forced choice calls a tool even after results came back, as a real model must.
    if prompt.choice == "required" or not prompt.has_tool_result:
        return prompt.tools[0]
    return None


def _scripted_call(call: ToolCall) -> Call:
    return Call(call.id, call.name, json.dumps(call.arguments))


def _arguments(tool: Tool, config: FakeConfig) -> str:
    if tool.name in config.tool_arguments:
        return json.dumps(config.tool_arguments[tool.name])
    arguments = example(tool.schema)
    return json.dumps(arguments if isinstance(arguments, dict) else {})


def example(schema: dict[str, Any]) -> Any:
    """A simple value that satisfies ``schema``: its required properties, filled in."""
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example(schema[key][0])
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example(props.get(name) or {}) for name in schema.get("required") or []}
    return _SCALARS.get(kind) if isinstance(kind, str) else None


_SCALARS: dict[str, Any] = {
    "string": "example",
    "integer": 1,
    "number": 1,
    "boolean": True,
    "array": [],
    "null": None,
}


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]
