"""Official provider SDK clients for a local run, metered in-process.

``run.openai()`` / ``run.anthropic()`` / ``run.wrap(client)`` give clients whose HTTP goes
through an httpx transport that hands each request to the same metering core the gateway
uses (record, replay, budget, price), then to the real provider with the caller's own key.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

try:  # the provider SDKs moved to the httpx2 fork; older releases use httpx itself
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from papayya.background import BackgroundLoop
from papayya.metering import providers as pv
from papayya.metering.meter import Meter, MeteredResponse, Upstream

if TYPE_CHECKING:
    from papayya.sdk.run import Run


def _route(request: httpx.Request, base_path: str) -> str:
    path = str(request.url.path)
    prefix = base_path.rstrip("/") + "/"
    return path[len(prefix) :] if path.startswith(prefix) else path.lstrip("/")


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, loop: BackgroundLoop, stream: AsyncIterator[bytes]) -> None:
        self._loop = loop
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                yield self._loop.call(_next(self._stream))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self._loop.call(_close(self._stream))


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, loop: BackgroundLoop, stream: AsyncIterator[bytes]) -> None:
        self._loop = loop
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self._loop.acall(_next(self._stream))
            except StopAsyncIteration:
                return

    async def aclose(self) -> None:
        await self._loop.acall(_close(self._stream))


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await stream.__anext__()


async def _close(stream: AsyncIterator[bytes]) -> None:
    closer = getattr(stream, "aclose", None)
    if closer is not None:
        await closer()


def _response(
    loop: BackgroundLoop, result: MeteredResponse, request: httpx.Request, sync: bool
) -> httpx.Response:
    if result.stream is None:
        return httpx.Response(result.status, headers=result.headers, content=result.body,
                              request=request)  # fmt: skip
    stream: Any = (_SyncStream if sync else _AsyncStream)(loop, result.stream)
    return httpx.Response(result.status, headers=result.headers, stream=stream, request=request)


class _Metered:
    def __init__(
        self, loop: BackgroundLoop, meter: Meter, run_id: str, provider: pv.Provider, client: Any
    ) -> None:
        self.loop, self.meter, self.run_id, self.provider = loop, meter, run_id, provider
        base = str(client.base_url)
        self.base_path = httpx.URL(base).path
        self.upstream = Upstream(base, getattr(client, "api_key", None))


class MeteredTransport(_Metered, httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = _route(request, self.base_path)
        call = self.meter.call(self.run_id, self.provider, route, request.read(), self.upstream)
        return _response(self.loop, self.loop.call(call), request, sync=True)


class AsyncMeteredTransport(_Metered, httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = _route(request, self.base_path)
        raw = await request.aread()
        call = self.meter.call(self.run_id, self.provider, route, raw, self.upstream)
        result = await self.loop.acall(call)
        return _response(self.loop, result, request, sync=False)


def provider_of(client: Any) -> pv.Provider:
    module = type(client).__module__
    if module.startswith("openai"):
        return "openai"
    if module.startswith("anthropic"):
        return "anthropic"
    raise TypeError(f"run.wrap() takes an openai or anthropic client, not {type(client)!r}")


def wrap(run: Run, loop: BackgroundLoop, meter: Meter, client: Any) -> Any:
    """A copy of an official SDK client whose calls are metered into ``run``."""
    provider = provider_of(client)
    is_async = asyncio.iscoroutinefunction(getattr(client, "close", None))
    transport: Any
    if is_async:
        transport = AsyncMeteredTransport(loop, meter, run.id, provider, client)
        http_client: Any = httpx.AsyncClient(transport=transport, timeout=600)
    else:
        transport = MeteredTransport(loop, meter, run.id, provider, client)
        http_client = httpx.Client(transport=transport, timeout=600)
    # The meter sends to the provider itself; the SDK must not retry what the meter refused.
    return client.with_options(http_client=http_client, max_retries=0)


def through_gateway(client: Any, url: str, token: str) -> Any:
    """A copy of an official SDK client that sends its calls to the server's gateway at
    ``url`` with a run token: HTTP mode, where the server meters them with its own keys."""
    # The gateway answers a refused call with x-should-retry: false; it must not be retried.
    return client.with_options(base_url=url, api_key=token, max_retries=0)


def server_defaults(provider: str) -> dict[str, str]:
    """Direct mode: with no key (or base URL) of the provider's own in the environment, the
    ones a Papayya server on this machine would use (``PAPAYYA_OPENAI_API_KEY``…)."""
    name = provider.upper()
    found: dict[str, str] = {}
    for option, own in (("api_key", f"{name}_API_KEY"), ("base_url", f"{name}_BASE_URL")):
        ours = os.environ.get(f"PAPAYYA_{name}_{option.upper()}")
        if ours and not os.environ.get(own):
            found[option] = ours
    return found
