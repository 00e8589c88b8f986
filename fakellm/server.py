"""``serve(host, port)``: run the fake provider until interrupted (the CLI's entry point)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec
from aiohttp import web

from fakellm.app import create_app
from fakellm.config import FakeConfig


def serve(host: str = "127.0.0.1", port: int = 8765, config: FakeConfig | None = None) -> None:
    """Serve OpenAI routes under ``http://host:port/v1`` and Anthropic ones at the root."""
    print(
        f"fake-llm: OPENAI_BASE_URL=http://{host}:{port}/v1 ANTHROPIC_BASE_URL=http://{host}:{port}",
        flush=True,
    )
    web.run_app(create_app(config), host=host, port=port, print=None)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fakellm",
        description="A fake OpenAI and Anthropic API server for tests, benchmarks and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--config", default="{}", help='FakeConfig as JSON, e.g. \'{"text": "hi", "echo": true}\''
    )
    args = parser.parse_args(argv)
    try:
        config = msgspec.json.decode(args.config, type=FakeConfig)
    except msgspec.DecodeError as exc:  # also raised for JSON of the wrong shape
        parser.error(f"--config: {exc}")
    serve(args.host, args.port, config)
