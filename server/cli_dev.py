"""``papayya dev …``: tools for developing agents without real providers."""

from __future__ import annotations

import click
import msgspec


@click.group()
def dev() -> None:
    """Development tools."""


@dev.command("fake-llm")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--text", default=None, help="What the fake model answers.")
@click.option("--config", "config_json", default=None, help="A FakeConfig as JSON.")
def fake_llm(host: str, port: int, text: str | None, config_json: str | None) -> None:
    """A fake OpenAI and Anthropic server (streaming, tool calls, usage, errors).

    Point Papayya at it with PAPAYYA_OPENAI_BASE_URL=http://HOST:PORT/v1 and
    PAPAYYA_ANTHROPIC_BASE_URL=http://HOST:PORT. Admin: GET /_fake/stats, POST /_fake/config.
    """
    from fakellm import FakeConfig, serve

    try:
        config = msgspec.json.decode(config_json, type=FakeConfig) if config_json else FakeConfig()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    if text is not None:
        config = msgspec.structs.replace(config, text=text)
    serve(host, port, config)
