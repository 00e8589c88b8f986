"""``kind="llm"``: the usage read from a provider response, shape by shape, as the published
SDK's ``llm_extract`` reads it; and which provider errors mean "out of credits"."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

import pytest

from papayya.sdk.llm_usage import UNKNOWN, LlmUsage, extract_llm_usage, is_credit_exhaustion


class Broken:
    @property
    def usage(self) -> Any:
        raise RuntimeError("a malformed response")


@pytest.mark.parametrize(
    ("response", "usage"),
    [
        (
            NS(model="gpt-4o", usage=NS(prompt_tokens=10, completion_tokens=5, total_tokens=15),
               choices=[NS(finish_reason="stop")]),
            LlmUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15, model="gpt-4o",
                     stop_reason="stop", provider_shape="openai"),
        ),
        (
            NS(model="claude", usage=NS(input_tokens=7, output_tokens=3), stop_reason="end_turn"),
            LlmUsage(prompt_tokens=7, completion_tokens=3, total_tokens=10, model="claude",
                     stop_reason="end_turn", provider_shape="anthropic"),
        ),
        (
            NS(model_version="gemini-2", candidates=[NS(finish_reason="STOP")],
               usage_metadata=NS(prompt_token_count=4, candidates_token_count=2,
                                 total_token_count=6)),
            LlmUsage(prompt_tokens=4, completion_tokens=2, total_tokens=6, model="gemini-2",
                     stop_reason="STOP", provider_shape="gemini"),
        ),
        (
            {"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 1},
             "choices": [{"finish_reason": "length"}]},
            LlmUsage(prompt_tokens=3, completion_tokens=1, total_tokens=4, model="m",
                     stop_reason="length", provider_shape="dict-openai"),
        ),
        (
            {"usage": {"input_tokens": 2, "output_tokens": 2, "total_tokens": 5},
             "stop_reason": "max_tokens"},
            LlmUsage(prompt_tokens=2, completion_tokens=2, total_tokens=5,
                     stop_reason="max_tokens", provider_shape="dict-anthropic"),
        ),
        # Only one count reported: the other is unknown, never zero, and so is the total.
        (
            NS(usage=NS(input_tokens=None, output_tokens=9)),
            LlmUsage(completion_tokens=9, provider_shape="anthropic"),
        ),
        (None, UNKNOWN),
        ("just text", UNKNOWN),
        ({"usage": {"other": 1}}, UNKNOWN),
        (NS(usage=NS()), UNKNOWN),
        (Broken(), UNKNOWN),
        ({"usage": {"prompt_tokens": "many", "completion_tokens": True}}, LlmUsage(
            provider_shape="dict-openai")),
    ],
)  # fmt: skip
def test_usage_by_shape(response: Any, usage: LlmUsage) -> None:
    assert extract_llm_usage(response) == usage


def test_a_model_name_is_cut_to_what_the_wire_takes() -> None:
    found = extract_llm_usage({"model": "m" * 500, "usage": {"prompt_tokens": 1}})
    assert found.model == "m" * 200


class ProviderError(Exception):
    def __init__(self, message: str, status_code: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


@pytest.mark.parametrize(
    ("error", "credit"),
    [
        (ProviderError("payment", 402), True),
        (ProviderError("quota", 429, {"error": {"code": "insufficient_quota"}}), True),
        (ProviderError("low", 400, {"error": {"type": "credit_balance_too_low"}}), True),
        (ProviderError("Your account is out of credits"), True),
        (ProviderError("slow down", 429, {"error": {"code": "rate_limit_exceeded"}}), False),
        (ProviderError("server error", 500), False),
        (ValueError("not a provider error"), False),
    ],
)
def test_credit_exhaustion(error: Exception, credit: bool) -> None:
    assert is_credit_exhaustion(error) is credit
