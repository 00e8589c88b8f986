"""The fake LLM provider, driven over loopback HTTP by the official OpenAI and Anthropic SDKs."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from fakellm import Errors, Failure, FakeConfig, Latency, Reply, ToolCall, Usage
from fakellm.testing import FakeServer, running_fake, running_fake_in_thread
from fakellm.turn import example

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "note": {"type": "string"},
    },
    "required": ["city", "days", "unit"],
}
CHAT_TOOLS: Any = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}},
]
RESPONSES_TOOLS: Any = [{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA}]
ANTHROPIC_TOOLS: Any = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
DERIVED_ARGS = {"city": "example", "days": 1, "unit": "c"}
HI: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    async with running_fake() as server:
        yield server


@pytest.fixture
async def oai(fake: FakeServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=fake.openai_base_url, api_key="sk-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def ant(fake: FakeServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0
    ) as client:
        yield client


@pytest.fixture
def threaded_fake() -> Iterator[FakeServer]:
    with running_fake_in_thread(FakeConfig(echo=True)) as server:
        yield server


async def _post(
    fake: FakeServer, path: str, body: bytes | dict[str, Any], headers: dict[str, str]
) -> tuple[int, Any, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.url + path, data=data, headers=headers) as response,
    ):
        text = await response.text()
        parsed = json.loads(text) if response.content_type == "application/json" else None
        return response.status, parsed, text


# --- OpenAI chat completions ---------------------------------------------------------------


async def test_chat_answers_with_default_text_and_computed_usage(
    fake: FakeServer, oai: openai.AsyncOpenAI
) -> None:
    completion = await oai.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.content == "Hello from fake-llm"
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == math.ceil(len("Hello from fake-llm") / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert fake.stats.by_route["/v1/chat/completions"] == 1


async def test_chat_calls_the_first_tool_until_a_tool_result_arrives(
    oai: openai.AsyncOpenAI,
) -> None:
    first = await oai.chat.completions.create(model="gpt-4o", messages=HI, tools=CHAT_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == DERIVED_ARGS

    history: Any = [
        *HI,
        {"role": "assistant", "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await oai.chat.completions.create(model="gpt-4o", messages=history, tools=CHAT_TOOLS)
    assert second.choices[0].message.content == "Hello from fake-llm"
    assert second.choices[0].finish_reason == "stop"


async def test_chat_tool_choice_and_configured_arguments(
    fake: FakeServer, oai: openai.AsyncOpenAI
) -> None:
    fake.configure(tool_arguments={"other": {"x": 1}})
    named = await oai.chat.completions.create(
        model="gpt-4o",
        messages=HI,
        tools=CHAT_TOOLS,
        tool_choice={"type": "function", "function": {"name": "other"}},
    )
    [call] = named.choices[0].message.tool_calls or []
    assert call.function.name == "other"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"x": 1}  # type: ignore[union-attr]

    none = await oai.chat.completions.create(
        model="gpt-4o", messages=HI, tools=CHAT_TOOLS, tool_choice="none"
    )
    assert none.choices[0].message.content == "Hello from fake-llm"


async def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(
    fake: FakeServer, oai: openai.AsyncOpenAI
) -> None:
    fake.configure(
        text="one two three four",
        usage=Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=100, reasoning_tokens=9),
    )
    stream = await oai.chat.completions.create(
        model="gpt-4o", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    *content_chunks, last = chunks
    assert all(c.usage is None for c in content_chunks)
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (120, 30)
    assert last.usage.total_tokens == 150
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 100
    assert last.usage.completion_tokens_details is not None
    assert last.usage.completion_tokens_details.reasoning_tokens == 9
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == "one two three four"
    assert len(content_chunks) >= 4  # streamed in pieces, not in one
    assert content_chunks[-1].choices[0].finish_reason == "stop"


async def test_chat_stream_without_include_usage_has_no_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks and all(c.usage is None and c.choices for c in chunks)


async def test_chat_stream_helper_assembles_tool_calls(oai: openai.AsyncOpenAI) -> None:
    async with oai.chat.completions.stream(model="gpt-4o", messages=HI, tools=CHAT_TOOLS) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == DERIVED_ARGS


async def test_chat_stream_wire_format(fake: FakeServer) -> None:
    body = {"model": "m", "messages": HI, "stream": True, "stream_options": {"include_usage": True}}
    status, _, text = await _post(
        fake, "/v1/chat/completions", body, {"Authorization": "Bearer sk-test"}
    )
    assert status == 200
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    assert json.loads(events[0].removeprefix("data: "))["usage"] is None


def test_sync_openai_client_against_a_threaded_fake(threaded_fake: FakeServer) -> None:
    with openai.OpenAI(
        base_url=threaded_fake.openai_base_url, api_key="sk-real-key", max_retries=0
    ) as client:
        completion = client.chat.completions.create(model="gpt-4o", messages=HI)
        assert completion.choices[0].message.content == "What is the weather in Paris?"  # echo
        stream = client.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream)
        assert text == "What is the weather in Paris?"
    assert threaded_fake.stats.by_api_key["sk-real-key"] == 2
    last = threaded_fake.stats.last
    assert last is not None and last.headers["authorization"] == "Bearer sk-real-key"


# --- OpenAI responses and embeddings -------------------------------------------------------


async def test_responses_text_and_usage(fake: FakeServer, oai: openai.AsyncOpenAI) -> None:
    fake.configure(
        usage=Usage(prompt_tokens=50, completion_tokens=20, cached_tokens=10, reasoning_tokens=5)
    )
    response = await oai.responses.create(model="gpt-4.1", input="hello", instructions="be nice")
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == "Hello from fake-llm"
    assert response.instructions == "be nice"
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (50, 20, 70)
    assert usage.input_tokens_details.cached_tokens == 10
    assert usage.output_tokens_details.reasoning_tokens == 5


async def test_responses_function_call_then_text(oai: openai.AsyncOpenAI) -> None:
    first = await oai.responses.create(model="gpt-4.1", input="weather?", tools=RESPONSES_TOOLS)
    [call] = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather" and json.loads(call.arguments) == DERIVED_ARGS
    second = await oai.responses.create(
        model="gpt-4.1",
        tools=RESPONSES_TOOLS,
        input=[
            {"role": "user", "content": "weather?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "Hello from fake-llm"


async def test_responses_stream_events(fake: FakeServer, oai: openai.AsyncOpenAI) -> None:
    fake.configure(text="streamed answer here")
    stream = await oai.responses.create(model="gpt-4.1", input="hi", stream=True)
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "streamed answer here" and len(deltas) == 3
    for kind in ("output_item.added", "content_part.added", "output_text.done", "output_item.done"):
        assert "response." + kind in kinds
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None and completed.response.usage.output_tokens > 0


async def test_responses_stream_helper_with_function_call(oai: openai.AsyncOpenAI) -> None:
    async with oai.responses.stream(
        model="gpt-4.1", input="weather?", tools=RESPONSES_TOOLS
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments) == DERIVED_ARGS


async def test_embeddings_base64_default_float_and_dimensions(
    fake: FakeServer, oai: openai.AsyncOpenAI
) -> None:
    default = await oai.embeddings.create(model="text-embedding-3-small", input=["a", "b", "a"])
    assert fake.stats.last is not None and fake.stats.last.body["encoding_format"] == "base64"
    vectors = [d.embedding for d in default.data]
    assert [len(v) for v in vectors] == [8, 8, 8]
    assert vectors[0] == vectors[2] != vectors[1]  # deterministic per input
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-5)
    assert default.usage.prompt_tokens == default.usage.total_tokens == 3

    floats = await oai.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="float", dimensions=16
    )
    assert len(floats.data[0].embedding) == 16
    assert floats.data[0].embedding[:8] != pytest.approx(vectors[0])  # depends on dimensions
    assert floats.model == "text-embedding-3-small"


# --- Anthropic messages --------------------------------------------------------------------


async def test_messages_text_and_usage_buckets(
    fake: FakeServer, ant: anthropic.AsyncAnthropic
) -> None:
    fake.configure(
        usage=Usage(
            prompt_tokens=100, completion_tokens=40, cached_tokens=30, cache_write_tokens=20
        )
    )
    message = await ant.messages.create(model="claude-test", max_tokens=1024, messages=HI)
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    [block] = message.content
    assert block.type == "text" and block.text == "Hello from fake-llm"
    usage = message.usage
    assert usage.input_tokens == 50  # Anthropic reports cache reads and writes apart
    assert usage.cache_read_input_tokens == 30
    assert usage.cache_creation_input_tokens == 20
    assert usage.output_tokens == 40


async def test_messages_tool_use_then_text(ant: anthropic.AsyncAnthropic) -> None:
    first = await ant.messages.create(
        model="claude-test", max_tokens=1024, messages=HI, tools=ANTHROPIC_TOOLS
    )
    assert first.stop_reason == "tool_use"
    [tool_use] = first.content
    assert tool_use.type == "tool_use" and tool_use.id.startswith("toolu_")
    assert tool_use.name == "get_weather" and tool_use.input == DERIVED_ARGS
    result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny"}
    history: Any = [
        *HI,
        {"role": "assistant", "content": [tool_use.model_dump(exclude_none=True)]},
        {"role": "user", "content": [result]},
    ]
    second = await ant.messages.create(
        model="claude-test", max_tokens=1024, messages=history, tools=ANTHROPIC_TOOLS
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"


async def test_messages_stream_events_and_cumulative_usage(
    fake: FakeServer, ant: anthropic.AsyncAnthropic
) -> None:
    fake.configure(text="a streamed reply", usage=Usage(completion_tokens=12))
    stream = await ant.messages.create(
        model="claude-test", max_tokens=100, messages=HI, stream=True
    )
    events = [event async for event in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and start.message.usage.output_tokens == 1
    assert delta.type == "message_delta" and delta.usage.output_tokens == 12
    assert delta.delta.stop_reason == "end_turn"
    texts = [
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    ]
    assert "".join(texts) == "a streamed reply" and len(texts) == 3


async def test_messages_stream_helper_with_tool_use(ant: anthropic.AsyncAnthropic) -> None:
    async with ant.messages.stream(
        model="claude-test", max_tokens=1024, messages=HI, tools=ANTHROPIC_TOOLS
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert "input_json" in kinds
    [tool_use] = final.content
    assert tool_use.type == "tool_use" and tool_use.input == DERIVED_ARGS
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens > 1


async def test_messages_stream_wire_format(fake: FakeServer) -> None:
    body = {"model": "c", "max_tokens": 10, "messages": HI, "stream": True}
    headers = {"x-api-key": "sk-ant", "anthropic-version": "2023-06-01"}
    status, _, text = await _post(fake, "/v1/messages", body, headers)
    assert status == 200
    events = [e.split("\n") for e in text.split("\n\n") if e]
    names = [lines[0].removeprefix("event: ") for lines in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-1] == "message_stop"
    assert all(
        json.loads(lines[1].removeprefix("data: "))["type"] == n
        for n, lines in zip(names, events, strict=True)
    )
    assert fake.stats.last is not None and fake.stats.last.api_key == "sk-ant"


def test_sync_anthropic_client_against_a_threaded_fake(threaded_fake: FakeServer) -> None:
    with anthropic.Anthropic(
        base_url=threaded_fake.anthropic_base_url, api_key="sk-ant-real", max_retries=0
    ) as client:
        message = client.messages.create(model="claude-test", max_tokens=50, messages=HI)
        assert message.content[0].type == "text"
        assert message.content[0].text == "What is the weather in Paris?"
        with client.messages.stream(model="claude-test", max_tokens=50, messages=HI) as stream:
            assert "".join(stream.text_stream) == "What is the weather in Paris?"
        count = client.messages.count_tokens(model="claude-test", messages=HI)
        assert count.input_tokens > 0
    assert threaded_fake.stats.by_route["/v1/messages"] == 2
    assert threaded_fake.stats.by_route["/v1/messages/count_tokens"] == 1


async def test_max_tokens_cuts_the_answer(
    fake: FakeServer, ant: anthropic.AsyncAnthropic, oai: openai.AsyncOpenAI
) -> None:
    fake.configure(text="x" * 400)
    message = await ant.messages.create(model="c", max_tokens=5, messages=HI)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5
    assert message.content[0].type == "text" and len(message.content[0].text) == 20
    completion = await oai.chat.completions.create(model="m", messages=HI, max_tokens=5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    response = await oai.responses.create(model="m", input="hi", max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


# --- Scripts, errors, auth, validation -----------------------------------------------------


async def test_scripted_replies_are_used_in_order(
    fake: FakeServer, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    fake.script.extend(
        [
            Reply(text="scripted"),
            Reply(tool_calls=[ToolCall("search", {"q": "papayya"}, id="call_fixed")]),
            Reply(failure=Failure(status=429, message="slow down")),
            Reply(text="from claude", usage=Usage(completion_tokens=99)),
        ]
    )
    first = await oai.chat.completions.create(model="m", messages=HI)
    assert first.choices[0].message.content == "scripted"
    second = await oai.responses.create(model="m", input="hi")
    [call] = second.output
    assert call.type == "function_call"
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "call_fixed",
        "search",
        {"q": "papayya"},
    )
    with pytest.raises(openai.RateLimitError, match="slow down"):
        await oai.chat.completions.create(model="m", messages=HI)
    fourth = await ant.messages.create(model="c", max_tokens=200, messages=HI)
    assert fourth.content[0].type == "text" and fourth.content[0].text == "from claude"
    assert fourth.usage.output_tokens == 99
    assert not fake.script
    fifth = await oai.chat.completions.create(model="m", messages=HI)
    assert fifth.choices[0].message.content == "Hello from fake-llm"


async def test_scripted_failures_can_cut_a_stream_short(
    fake: FakeServer, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    cut = Reply(failure=Failure(status=500, message="boom", after_events=2))
    fake.script.extend([cut, cut, cut])
    received: list[Any] = []
    chat = await oai.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        async for chunk in chat:
            received.append(chunk)
    assert len(received) == 2

    responses = await oai.responses.create(model="m", input="hi", stream=True)
    events = [event async for event in responses]
    assert [e.type for e in events] == ["response.created", "response.in_progress", "error"]
    assert events[-1].type == "error" and events[-1].message == "boom"

    messages = await ant.messages.create(model="c", max_tokens=10, messages=HI, stream=True)
    received.clear()
    with pytest.raises(anthropic.APIStatusError, match="boom"):  # HTTP 200 already sent
        async for event in messages:
            received.append(event.type)
    assert received == ["message_start"]  # the ping was the second event
    assert fake.stats.by_status == {200: 3}


async def test_openai_error_injection(fake: FakeServer, oai: openai.AsyncOpenAI) -> None:
    fake.configure(errors=Errors(fail_next=2, status=429, retry_after=1.5))
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as caught:
            await oai.chat.completions.create(model="m", messages=HI, stream=True)
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.response.headers["retry-after"] == "1.5"
    assert error.response.headers["x-request-id"].startswith("req_")
    await oai.chat.completions.create(model="m", messages=HI)  # the third one passes

    for status, kind in [
        (500, openai.InternalServerError),
        (400, openai.BadRequestError),
        (503, openai.InternalServerError),
    ]:
        fake.configure(errors=Errors(fail_next=1, status=status))
        with pytest.raises(kind) as failed:
            await oai.embeddings.create(model="e", input="x")
        assert failed.value.status_code == status
    assert fake.stats.by_status == {429: 2, 200: 1, 500: 1, 400: 1, 503: 1}


async def test_anthropic_error_injection(fake: FakeServer, ant: anthropic.AsyncAnthropic) -> None:
    cases: list[tuple[int, type[anthropic.APIStatusError], str]] = [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
    ]
    for status, kind, error_type in cases:
        fake.configure(errors=Errors(fail_next=1, status=status, message="injected"))
        with pytest.raises(kind) as caught:
            await ant.messages.create(model="c", max_tokens=10, messages=HI)
        body = caught.value.body
        assert isinstance(body, dict) and body["type"] == "error"
        assert body["error"] == {"type": error_type, "message": "injected"}
        assert caught.value.request_id is not None


async def test_probabilistic_errors_are_reproducible_with_a_seed() -> None:
    config = FakeConfig(errors=Errors(probability=0.5, seed=7, status=500))
    patterns = []
    for _ in range(2):
        async with running_fake(config) as server:
            async with openai.AsyncOpenAI(
                base_url=server.openai_base_url, api_key="k", max_retries=0
            ) as client:
                pattern = []
                for _ in range(12):
                    try:
                        await client.embeddings.create(model="e", input="x")
                        pattern.append(True)
                    except openai.InternalServerError:
                        pattern.append(False)
                patterns.append(pattern)
    assert patterns[0] == patterns[1]
    assert True in patterns[0] and False in patterns[0]


async def test_missing_or_unknown_keys_get_the_providers_401(fake: FakeServer) -> None:
    status, body, _ = await _post(fake, "/v1/chat/completions", {"model": "m", "messages": HI}, {})
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "API key" in body["error"]["message"]
    status, body, _ = await _post(
        fake, "/v1/messages", {"model": "c"}, {"anthropic-version": "2023-06-01"}
    )
    assert status == 401
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"

    fake.configure(api_keys=["sk-good"])
    async with openai.AsyncOpenAI(
        base_url=fake.openai_base_url, api_key="sk-bad", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="m", messages=HI)
        assert caught.value.code == "invalid_api_key"
    async with anthropic.AsyncAnthropic(
        base_url=fake.anthropic_base_url, api_key="sk-good", max_retries=0
    ) as good:
        await good.messages.create(model="c", max_tokens=10, messages=HI)
    assert fake.stats.by_status == {401: 3, 200: 1}
    assert fake.stats.total == 4


async def test_validation_errors_have_the_providers_shapes(fake: FakeServer) -> None:
    openai_auth = {"Authorization": "Bearer sk"}
    anthropic_auth = {"x-api-key": "sk", "anthropic-version": "2023-06-01"}
    status, body, _ = await _post(fake, "/v1/chat/completions", {"messages": HI}, openai_auth)
    assert status == 400 and body["error"]["param"] == "model"
    assert body["error"]["type"] == "invalid_request_error"
    status, body, _ = await _post(fake, "/v1/chat/completions", b"{not json", openai_auth)
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body, _ = await _post(fake, "/v1/embeddings", {"model": "e"}, openai_auth)
    assert status == 400 and body["error"]["param"] == "input"
    status, body, _ = await _post(fake, "/v1/messages", {"messages": HI}, anthropic_auth)
    assert status == 400 and body["error"]["message"] == "model: Field required"
    status, body, _ = await _post(
        fake, "/v1/messages", {"model": "c", "messages": HI}, anthropic_auth
    )
    assert status == 400 and body["error"]["message"] == "max_tokens: Field required"
    status, body, _ = await _post(fake, "/v1/messages", b"[", anthropic_auth)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body, _ = await _post(fake, "/v1/nope", {}, openai_auth)
    assert status == 404 and body["error"]["message"].startswith("Invalid URL")
    assert fake.stats.total == 7
    assert fake.stats.by_model == {"e": 1, "c": 1}


async def test_unknown_models_get_404(fake: FakeServer, oai: openai.AsyncOpenAI) -> None:
    fake.configure(models=["gpt-4o"])
    await oai.chat.completions.create(model="gpt-4o", messages=HI)
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.chat.completions.create(model="gpt-5-nope", messages=HI)
    assert caught.value.code == "model_not_found"


# --- Latency, stats and admin endpoints ----------------------------------------------------


async def test_latency_first_byte_and_per_chunk(fake: FakeServer, oai: openai.AsyncOpenAI) -> None:
    fake.configure(latency=Latency(first_byte=0.2))
    started = time.monotonic()
    await oai.chat.completions.create(model="m", messages=HI)
    assert time.monotonic() - started >= 0.2

    fake.configure(latency=Latency(first_byte=0.0, per_chunk=0.05), text="a b c d e")
    started = time.monotonic()
    stream = await oai.chat.completions.create(model="m", messages=HI, stream=True)
    arrivals = [time.monotonic() - started async for _ in stream]
    assert len(arrivals) == 7  # role, five words, finish
    assert arrivals[-1] >= 6 * 0.05


async def test_admin_endpoints_configure_script_report_and_reset(
    fake: FakeServer, oai: openai.AsyncOpenAI
) -> None:
    async with aiohttp.ClientSession(base_url=fake.url) as http:
        async with http.post("/_fake/config", json={"text": "via admin", "echo": False}) as r:
            assert r.status == 200 and (await r.json())["text"] == "via admin"
        async with http.post("/_fake/config", json={"bogus": 1}) as r:
            assert r.status == 400
        async with http.post("/_fake/script", json=[{"text": "one"}, {"text": "two"}]) as r:
            assert (await r.json()) == {"queued": 2}

        answers = [
            (await oai.chat.completions.create(model=m, messages=HI)).choices[0].message.content
            for m in ("gpt-a", "gpt-b", "gpt-a")
        ]
        assert answers == ["one", "two", "via admin"]
        await oai.embeddings.create(model="emb", input="x")

        async with http.get("/_fake/stats") as r:
            stats = await r.json()
        assert stats["total"] == 4
        assert stats["by_route"] == {"/v1/chat/completions": 3, "/v1/embeddings": 1}
        assert stats["by_model"] == {"gpt-a": 2, "gpt-b": 1, "emb": 1}
        assert stats["by_api_key"] == {"sk-test": 4}
        assert stats["requests"][0]["body"]["messages"] == HI
        assert stats["requests"][-1]["status"] == 200

        async with http.post("/_fake/reset") as r:
            assert r.status == 200
        async with http.get("/_fake/config") as r:
            assert (await r.json())["text"] == "Hello from fake-llm"
        assert fake.stats.total == 0 and fake.config == FakeConfig()


def test_the_module_runs_as_a_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--port", str(port), "--config", '{"text": "from the CLI"}']
    process = subprocess.Popen(
        [sys.executable, "-m", "fakellm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0
        ) as client:
            deadline = time.monotonic() + 20
            while True:
                try:
                    completion = client.chat.completions.create(model="m", messages=HI)
                    break
                except openai.APIConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        assert completion.choices[0].message.content == "from the CLI"
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_schema_examples_fill_required_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "limit": {"type": ["integer", "null"], "default": 5},
            "mode": {"anyOf": [{"const": "fast"}, {"const": "slow"}]},
            "nested": {
                "type": "object",
                "properties": {"flag": {"type": "boolean"}},
                "required": ["flag"],
            },
            "optional": {"type": "string"},
        },
        "required": ["name", "tags", "limit", "mode", "nested"],
    }
    assert example(schema) == {
        "name": "example",
        "tags": [],
        "limit": 5,
        "mode": "fast",
        "nested": {"flag": True},
    }
