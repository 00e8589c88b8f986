"""What the fake model says and how it misbehaves: ``FakeConfig`` and scripted ``Reply``s.

Both are msgspec Structs so that the admin endpoint can patch them from JSON with the same
validation as in-process code (unknown fields are refused, like any Papayya request body).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

DEFAULT_TEXT = "Hello from fake-llm"
_NESTED = ("usage", "latency", "errors")


class Usage(msgspec.Struct, forbid_unknown_fields=True):
    """Token counts to report; ``None`` means "computed from the text" (about 4 chars a token).

    Counts follow OpenAI's convention: ``prompt_tokens`` is the whole prompt, cached and
    cache-write tokens included, and ``completion_tokens`` includes ``reasoning_tokens``. The
    Anthropic routes report ``input_tokens = prompt - cached - cache_write`` apart from the two
    cache counts, as Anthropic does, so one config yields the same buckets on both providers.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_write_tokens: int | None = None

    def over(self, base: Usage) -> Usage:
        """These counts, falling back to ``base`` where unset."""
        mine = msgspec.structs.asdict(self)
        return Usage(**{k: getattr(base, k) if v is None else v for k, v in mine.items()})


class Latency(msgspec.Struct, forbid_unknown_fields=True):
    """Delays in seconds: before the response starts, and between two streamed events."""

    first_byte: float = 0.0
    per_chunk: float = 0.0


class Errors(msgspec.Struct, forbid_unknown_fields=True):
    """Injected failures: the next ``fail_next`` requests fail, then each with ``probability``.

    A failure is an HTTP ``status`` with the provider's error body (and ``Retry-After`` when
    ``retry_after`` is set). ``seed`` makes the probabilistic failures reproducible.
    """

    fail_next: int = 0
    probability: float = 0.0
    status: int = 500
    message: str | None = None
    retry_after: float | None = None
    seed: int | None = None


class FakeConfig(msgspec.Struct, forbid_unknown_fields=True):
    """How the fake provider behaves. Patch it at run time with ``POST /_fake/config``.

    ``text`` is the answer when no tool is called (``echo`` answers with the last user message
    instead). ``tool_arguments`` maps a tool name to the arguments the model calls it with;
    otherwise they are derived from the tool's JSON schema. ``models``, when set, is the list of
    model names the fake knows (others get a 404). ``api_keys``, when set, is the list of keys it
    accepts (others get a 401). ``keep_requests`` bounds the recorded request bodies.
    """

    text: str = DEFAULT_TEXT
    echo: bool = False
    tool_arguments: dict[str, dict[str, Any]] = {}
    usage: Usage = msgspec.field(default_factory=Usage)
    latency: Latency = msgspec.field(default_factory=Latency)
    errors: Errors = msgspec.field(default_factory=Errors)
    embedding_dimensions: int = 8
    models: list[str] | None = None
    api_keys: list[str] | None = None
    keep_requests: int = 100

    def patched(self, patch: dict[str, Any]) -> FakeConfig:
        """A copy with ``patch`` applied; ``usage``, ``latency`` and ``errors`` merge key by key."""
        merged: dict[str, Any] = msgspec.to_builtins(self)
        for key, value in patch.items():
            if key in _NESTED and isinstance(value, dict):
                value = {**merged.get(key, {}), **value}
            merged[key] = value
        return msgspec.convert(merged, FakeConfig)


class ToolCall(msgspec.Struct, forbid_unknown_fields=True):
    """A scripted call of tool ``name``; ``id`` defaults to a provider-style fresh id."""

    name: str
    arguments: dict[str, Any] = {}
    id: str | None = None


class Failure(msgspec.Struct, forbid_unknown_fields=True):
    """A scripted error, rendered in the provider's error shape.

    By default the request fails with HTTP ``status``. With ``after_events``, a streaming
    request fails mid-stream instead: that many events, then the provider's error event.
    """

    status: int = 500
    message: str | None = None
    retry_after: float | None = None
    after_events: int | None = None


class Cut(msgspec.Struct, forbid_unknown_fields=True):
    """A stream that stops after ``after_events`` events, with no error event and no usage:
    ``end`` finishes the HTTP response there, ``reset`` drops the connection, ``stall`` sends
    nothing more until the client gives up."""

    after_events: int = 1
    how: Literal["end", "reset", "stall"] = "end"


class Reply(msgspec.Struct, forbid_unknown_fields=True):
    """One scripted model turn, used by the next generation request instead of the defaults.

    ``text`` and ``tool_calls`` may both be set (text first). With neither, the turn is the
    default one, so a ``Reply(usage=...)`` only changes the counts. ``failure`` wins over all.
    ``cut`` cuts a streamed answer short. ``past_cap``: the output is not cut at the request's
    ``max_tokens`` and ``usage`` is reported as set (a provider that over-reports).
    """

    text: str | None = None
    tool_calls: list[ToolCall] = []
    usage: Usage | None = None
    failure: Failure | None = None
    cut: Cut | None = None
    past_cap: bool = False
