"""A fake LLM provider server speaking the OpenAI and Anthropic HTTP APIs, streaming included.

For tests, benchmarks and demos: the official ``openai`` and ``anthropic`` SDKs work against it
unchanged (``base_url=<url>/v1`` for OpenAI, ``base_url=<url>`` for Anthropic). It answers
deterministically (see ``turn.decide``), counts every request, and can be told what to say,
how many tokens to report, how slowly to answer and when to fail.
"""

from fakellm.app import create_app
from fakellm.config import (
    DEFAULT_TEXT,
    Errors,
    Failure,
    FakeConfig,
    Latency,
    Reply,
    ToolCall,
    Usage,
)
from fakellm.server import serve
from fakellm.state import FAKE, FakeState, FakeStats, RecordedRequest

__all__ = [
    "DEFAULT_TEXT",
    "FAKE",
    "Errors",
    "Failure",
    "FakeConfig",
    "FakeState",
    "FakeStats",
    "Latency",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "Usage",
    "create_app",
    "serve",
]
