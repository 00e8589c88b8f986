"""Provider usage reports → disjoint token buckets (DESIGN §6).

OpenAI counts cached tokens inside the prompt total and reasoning inside the completion
total; Anthropic reports cache reads and writes apart from ``input_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from papayya.domain.bounds import clamp_tokens
from papayya.pricing import Tokens

# Every count a provider reports goes through this one rule (clamped to MAX_TOKENS).
_int = clamp_tokens


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, Mapping) else {}


def openai_usage(usage: Mapping[str, Any] | None) -> Tokens:
    """Chat completions (``prompt_tokens``…), responses (``input_tokens``…) and embeddings."""
    if not isinstance(usage, Mapping):
        return Tokens()
    if "input_tokens" in usage:  # the Responses API
        prompt = _int(usage.get("input_tokens"))
        cached = _int(_details(usage, "input_tokens_details").get("cached_tokens"))
        completion = _int(usage.get("output_tokens"))
        reasoning = _int(_details(usage, "output_tokens_details").get("reasoning_tokens"))
    else:
        prompt = _int(usage.get("prompt_tokens"))
        cached = _int(_details(usage, "prompt_tokens_details").get("cached_tokens"))
        completion = _int(usage.get("completion_tokens"))
        reasoning = _int(_details(usage, "completion_tokens_details").get("reasoning_tokens"))
    cached = min(cached, prompt)
    reasoning = min(reasoning, completion)
    return Tokens(
        input_tokens=prompt - cached,
        cached_input_tokens=cached,
        output_tokens=completion - reasoning,
        reasoning_tokens=reasoning,
    )


def anthropic_usage(usage: Mapping[str, Any] | None) -> Tokens:
    if not isinstance(usage, Mapping):
        return Tokens()
    return Tokens(
        input_tokens=_int(usage.get("input_tokens")),
        cached_input_tokens=_int(usage.get("cache_read_input_tokens")),
        cache_write_tokens=_int(usage.get("cache_creation_input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
    )


def merge_anthropic_stream(
    start: Mapping[str, Any] | None, delta: Mapping[str, Any] | None
) -> Tokens:
    """Tokens of a streamed message: ``message_start`` has the input side; ``message_delta``
    carries the *cumulative* output count (it replaces, never adds), and newer APIs may
    repeat input counts there too."""
    merged = dict(start or {})
    for key, value in (delta or {}).items():
        if value is not None:
            merged[key] = value
    return anthropic_usage(merged)
