"""What a ``kind="llm"`` task returned, as usage: tokens, model and stop reason.

The published SDK's shape ladder (``papayya.llm_extract``), kept field for field so that a
step records the same usage under either client. It duck-types on attributes and keys, never
imports a provider SDK, and never raises: an unknown shape is ``provider_shape="unknown"``
with every field ``None`` ("not reported", as distinct from zero tokens).

Order matters, specific shapes first: OpenAI (``usage.prompt_tokens``), Anthropic
(``usage.input_tokens``), Gemini (``usage_metadata.prompt_token_count``), then a plain dict
with either kind of ``usage`` keys (raw HTTP answers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from papayya.wire import LlmUsage

__all__ = ["UNKNOWN", "LlmUsage", "extract_llm_usage", "is_credit_exhaustion"]

UNKNOWN: Final = LlmUsage()


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    try:
        text = str(value)
    except Exception:
        return None
    return text[:200] or None  # the wire's limit: a model name is never longer


def _first(items: Any) -> Any:
    if not items:
        return None
    return items[0] if hasattr(items, "__getitem__") else next(iter(items), None)


def _sum(a: int | None, b: int | None) -> int | None:
    return a + b if a is not None and b is not None else None


def _openai(response: Any) -> LlmUsage | None:
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if usage is None or (prompt is None and completion is None):
        return None
    return LlmUsage(
        prompt_tokens=_int(prompt),
        completion_tokens=_int(completion),
        total_tokens=_int(getattr(usage, "total_tokens", None)),
        model=_str(getattr(response, "model", None)),
        stop_reason=_stop(response),
        provider_shape="openai",
    )


def _stop(response: Any) -> str | None:
    """The first choice's finish reason (OpenAI)."""
    return _str(getattr(_first(getattr(response, "choices", None)), "finish_reason", None))


def _anthropic(response: Any) -> LlmUsage | None:
    usage = getattr(response, "usage", None)
    prompt = _int(getattr(usage, "input_tokens", None))
    completion = _int(getattr(usage, "output_tokens", None))
    if usage is None or (prompt is None and completion is None):
        return None
    return LlmUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_sum(prompt, completion),
        model=_str(getattr(response, "model", None)),
        stop_reason=_str(getattr(response, "stop_reason", None)),
        provider_shape="anthropic",
    )


def _gemini(response: Any) -> LlmUsage | None:
    meta = getattr(response, "usage_metadata", None)
    prompt = getattr(meta, "prompt_token_count", None)
    candidates = getattr(meta, "candidates_token_count", None)
    if meta is None or (prompt is None and candidates is None):
        return None
    model = getattr(response, "model_version", None) or getattr(response, "model", None)
    first = _first(getattr(response, "candidates", None))
    return LlmUsage(
        prompt_tokens=_int(prompt),
        completion_tokens=_int(candidates),
        total_tokens=_int(getattr(meta, "total_token_count", None)),
        model=_str(model),
        stop_reason=_str(getattr(first, "finish_reason", None)),
        provider_shape="gemini",
    )


def _dict(response: Any) -> LlmUsage | None:
    if not isinstance(response, Mapping) or not isinstance(usage := response.get("usage"), Mapping):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        keys, shape = ("prompt_tokens", "completion_tokens"), "dict-openai"
    elif "input_tokens" in usage or "output_tokens" in usage:
        keys, shape = ("input_tokens", "output_tokens"), "dict-anthropic"
    else:
        return None
    prompt, completion = usage.get(keys[0]), usage.get(keys[1])
    choices = response.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    stop = first.get("finish_reason") if isinstance(first, Mapping) else None
    prompt, completion = _int(prompt), _int(completion)
    total = _int(usage.get("total_tokens"))
    return LlmUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_sum(prompt, completion) if total is None else total,
        model=_str(response.get("model")),
        stop_reason=_str(stop if stop is not None else response.get("stop_reason")),
        provider_shape=shape,
    )


_LADDER: Final[tuple[Callable[[Any], LlmUsage | None], ...]] = (_openai, _anthropic, _gemini, _dict)


def extract_llm_usage(response: Any) -> LlmUsage:
    """The usage ``response`` reports, by the first shape that matches; ``UNKNOWN`` if none."""
    if response is None:
        return UNKNOWN
    for extract in _LADDER:
        try:
            found = extract(response)
        except Exception:  # a malformed response must never fail the user's run
            continue
        if found is not None:
            return found
    return UNKNOWN


# -- credit exhaustion -------------------------------------------------------------------------

_CREDIT_CODES: Final = (
    "insufficient_quota",
    "billing_hard_limit_reached",
    "credit_balance_too_low",
    "billing_error",
    "insufficient_balance",
)
_CREDIT_WORDS: Final = (
    "payment method",
    "payment required",
    "billing limit",
    "billing capacity",
    "out of credits",
    "out of balance",
    "add credits",
    "insufficient credits",
    "insufficient funds",
    "prepaid balance",
    "exceeded your current quota, please check your plan and billing",
)


def is_credit_exhaustion(exc: BaseException) -> bool:
    """Whether a provider's exception means "top up the account" (HTTP 402, a billing error
    code, or billing words), as opposed to a transient rate limit: the published SDK's rule."""
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if status == 402:
        return True
    codes = [getattr(exc, "code", "")]
    body = getattr(exc, "body", None)
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        codes += [error.get("type"), error.get("code")]
    text = " ".join(c.lower() for c in codes if isinstance(c, str))
    message = str(exc).lower()
    return any(c in text or c in message for c in _CREDIT_CODES) or any(
        w in message for w in _CREDIT_WORDS
    )
