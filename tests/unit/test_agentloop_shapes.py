"""The built-in loop's provider shapes (pure): requests from the conversation, turns from
responses, tool results in each provider's form, and which shape a model speaks."""

from __future__ import annotations

import json

from papayya.domain.matcher import llm_fingerprint
from workers.shapes import (
    AnthropicMessages,
    Call,
    OpenAIChat,
    Settings,
    first_message,
    provider_of,
)
from workers.tools import ToolResult, ToolSpec, text_of

SPEC = ToolSpec("weather", "The weather", {"type": "object"})
SETTINGS = Settings("gpt-4o-mini", "Be brief.", [SPEC], 0.5, None)


def test_openai_request_turn_and_results() -> None:
    body = OpenAIChat().request(SETTINGS, [first_message("Paris?")])
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Paris?"}]  # fmt: skip
    assert body["tools"][0]["function"]["name"] == "weather" and body["temperature"] == 0.5
    asked = [{"id": "c1", "type": "function",
              "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
             {"id": "c2", "type": "function", "function": {"name": "weather",
                                                           "arguments": "{oops"}}]  # fmt: skip
    turn = OpenAIChat().turn({"choices": [{"message": {"content": None, "tool_calls": asked}}]})
    assert turn.calls[0] == Call("c1", "weather", {"city": "Paris"})
    assert turn.calls[1].bad_arguments == "{oops"
    assert turn.message == {"role": "assistant", "content": None, "tool_calls": asked}
    results = OpenAIChat().results([(turn.calls[0], ToolResult(output={"b": 1, "a": 2}))])
    assert results == [{"role": "tool", "tool_call_id": "c1", "content": '{"a": 2, "b": 1}'}]


def test_anthropic_request_turn_and_results() -> None:
    schema = {"type": "object"}
    settings = Settings("claude-3-5-haiku-latest", "", [SPEC], None, schema)
    body = AnthropicMessages().request(settings, [first_message("Paris?")])
    assert body["max_tokens"] > 0 and "temperature" not in body
    assert body["tools"] == [{"name": "weather", "description": "The weather",
                              "input_schema": {"type": "object"}}]  # fmt: skip
    assert json.dumps(schema) in body["system"]  # no schema mode: the prompt asks for it
    use = {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "X"}}
    content = [{"type": "text", "text": "Let me look. "}, use]
    turn = AnthropicMessages().turn({"content": content})
    assert turn.text == "Let me look. " and turn.calls == [Call("t1", "weather", {"city": "X"})]
    [message] = AnthropicMessages().results([(turn.calls[0], ToolResult(error="down"))])
    assert message["content"] == [{"type": "tool_result", "tool_use_id": "t1",
                                   "content": "error: down", "is_error": True}]  # fmt: skip


def test_rebuilt_requests_fingerprint_the_same_whatever_the_key_order() -> None:
    # A tool result read back from the store (JSONB reorders keys) gives the same request.
    one = ToolResult(output={"city": "Paris", "sky": "sunny"})
    two = ToolResult(output={"sky": "sunny", "city": "Paris"})
    assert text_of(one) == text_of(two)
    call = Call("c1", "weather", {"city": "Paris"})
    a = OpenAIChat().request(SETTINGS, OpenAIChat().results([(call, one)]))
    b = OpenAIChat().request(SETTINGS, OpenAIChat().results([(call, two)]))
    assert llm_fingerprint(a) == llm_fingerprint(b)


def test_the_shape_follows_the_price_table_then_the_name() -> None:
    assert provider_of("gpt-4o-mini") == "openai"
    assert provider_of("claude-3-5-haiku-latest") == "anthropic"
    assert provider_of("claude-unknown-model-xyz") == "anthropic"
    assert provider_of("my-local-model") == "openai"
