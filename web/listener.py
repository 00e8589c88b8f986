"""The HTTP listener: how many connections the server holds, and for how long a slow client
may keep one (README "Security", ``PAPAYYA_HTTP_*``).

A client that opens connections and sends its requests slowly, or never, must not take the
server down. So, on every connection:

- the request line and headers must arrive within ``header_timeout`` of their first byte, the
  body within ``body_timeout`` of the headers (408, JSON), and an idle keep-alive connection
  is closed after ``idle_timeout``;
- one client address holds at most ``max_connections_per_address`` connections;
- all together hold at most ``max_connections``, and never so many that the process runs out
  of file descriptors (the soft RLIMIT_NOFILE is raised to the hard one at start, and
  ``fd_reserve`` of them stay free for the database, Redis, files and one accept burst). At
  the cap, a new connection takes the place of the oldest one that is not handling a request
  (a half-sent request first, then an idle keep-alive one), so a client that sends a whole
  request at once, such as a ``/healthz`` probe, is still served;
- aiohttp's own answers to malformed requests (a request line over the limit, a bad header)
  have the JSON error shape, like every other error;
- all of this is logged once per ``log_interval`` as counts, never once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from papayya.errors import PapayyaError, RequestTimeout
from web import accesslog
from web.middleware import error_body

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "PAPAYYA_HTTP_"


@dataclass(frozen=True)
class Limits:
    """What one client may hold, each from ``PAPAYYA_HTTP_<NAME>`` (upper case)."""

    header_timeout: float = 10.0  # seconds from a request's first byte to its last header
    body_timeout: float = 60.0  # seconds from the headers to the body's last byte
    idle_timeout: float = 75.0  # seconds a connection may wait for its next request
    max_connections: int = 10_000
    max_connections_per_address: int = 256  # 0: no cap (behind a proxy that caps them)
    fd_reserve: int = 256  # descriptors never used for connections
    backlog: int = 1024  # connections the kernel queues until they are accepted
    max_line_bytes: int = 8190  # the request line, and each header
    max_headers: int = 128
    log_interval: float = 60.0  # seconds between two log lines about refused clients
    access_log: str = "errors"  # which requests the access log has (web.accesslog.MODES)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = (env.get(name) or "").strip()
            if not raw:
                continue
            if f.name == "access_log":
                if raw not in accesslog.MODES:
                    raise ValueError(f"{name} must be one of {', '.join(accesslog.MODES)}")
                values[f.name] = raw
                continue
            kind = int if f.type == "int" else float
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {raw!r}") from None
            if value < 0 or (value == 0 and f.name != "max_connections_per_address"):
                raise ValueError(f"{name} must be greater than 0")
            values[f.name] = value
        return cls(**values)


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft if soft != resource.RLIM_INFINITY else wanted
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # e.g. above the kernel's nr_open
        return soft
    return wanted


# How many connections asyncio accepts in one go (the ``backlog`` it is given; the kernel's
# queue is then deepened to ``Limits.backlog``, so a burst of connects is queued, not dropped).
ACCEPT_BURST: Final = 64


def connection_cap(limits: Limits, fd_limit: int) -> int:
    """How many connections may be open at once with ``fd_limit`` descriptors.

    asyncio accepts ``ACCEPT_BURST`` connections at a time before any of them is seen here,
    and a connection closed to make room frees its descriptor only a few loop iterations
    later: four bursts stay free beside ``fd_reserve``, so that an accept never fails (a
    failed accept stops all accepting for a second)."""
    spare = fd_limit - limits.fd_reserve - 4 * ACCEPT_BURST
    return max(1, min(limits.max_connections, spare))


def _deepen(site: web.BaseSite, backlog: int) -> None:
    """Let the kernel queue ``backlog`` connections on ``site``'s listening sockets."""
    server = site._server
    for each in getattr(server, "sockets", None) or ():
        # listen() again on the same socket (through a duplicate descriptor) only changes the
        # length of its queue.
        with socket.socket(fileno=os.dup(each.fileno())) as dup:
            dup.listen(backlog)


class IntervalLog:
    """Says each kind of event the first time at once, then how many more of that kind came,
    at most once an interval: a flood of them costs a few lines, never one line each."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}  # the kinds said recently, and their count since
        self._timer: asyncio.TimerHandle | None = None

    def note(self, what: str) -> None:
        if what in self.counts:
            self.counts[what] += 1
            return
        log.warning("http: %s (more are counted and logged every %g s)", what, self.interval)
        self.counts[what] = 0
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def _flush(self) -> None:
        said = {what: n for what, n in self.counts.items() if n}
        if said:
            summary = ", ".join(f"{n} {what}" for what, n in sorted(said.items()))
            log.warning("http in the last %g s: %s", self.interval, summary)
        # A kind that did not come again is quiet now: its next one is said at once.
        self.counts = dict.fromkeys(said, 0)
        self._timer = None
        if self.counts:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _canned(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP response, written straight to a connection no request owns."""
    body = web.json_response(error_body(code, message)).body
    assert isinstance(body, bytes)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        f"X-Request-Id: {uuid.uuid4().hex}\r\n\r\n"
    )
    return head.encode() + body


class Guard:
    """The connections of one server: counts per address, and the ones that may give way."""

    def __init__(self, limits: Limits, cap: int) -> None:
        self.limits = limits
        self.cap = cap
        self.open = 0
        self.per_address: Counter[str] = Counter()
        # Connections that are not handling a request, oldest first: half-sent requests are
        # closed before idle keep-alive connections to make room for a new one.
        self.heads: OrderedDict[GuardedHandler, None] = OrderedDict()
        self.idle: OrderedDict[GuardedHandler, None] = OrderedDict()
        self.log = IntervalLog(limits.log_interval)

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address`` in, or say why it is refused."""
        per = self.limits.max_connections_per_address
        if per and address and self.per_address[address] >= per:
            return f"more than {per} connections from one address"
        if self.open >= self.cap:
            for pool in (self.heads, self.idle):
                if pool:
                    victim, _ = pool.popitem(last=False)
                    self.log.note("connections closed to make room for new ones")
                    victim.force_close()  # its connection_lost releases it
                    break
            else:
                return f"{self.cap} connections are open"
        self.open += 1
        if address:
            self.per_address[address] += 1
        return None

    def release(self, handler: GuardedHandler, address: str) -> None:
        self.open -= 1
        if address:
            self.per_address[address] -= 1
            if not self.per_address[address]:
                del self.per_address[address]
        self.heads.pop(handler, None)
        self.idle.pop(handler, None)

    def waiting(self, handler: GuardedHandler, pool: OrderedDict[GuardedHandler, None]) -> None:
        """``handler`` waits for (the rest of) a request: it may give way, oldest first."""
        self.heads.pop(handler, None)
        self.idle.pop(handler, None)
        pool[handler] = None

    def working(self, handler: GuardedHandler) -> None:
        self.heads.pop(handler, None)
        self.idle.pop(handler, None)


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with the limits of ``Guard`` and JSON error answers."""

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None  # set once admitted
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._quiet_access = False

    # -- connections ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        # A Unix socket (agents' runtime API) has no address: only the total cap applies.
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refused = self._guard.admit(address)
        if refused is not None:
            self._guard.log.note("connections refused: " + refused)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_canned(503, "Service Unavailable", "too_many_connections",
                                    f"refused: {refused}; retry later"))  # fmt: skip
            transport.close()
            return
        self._address = address
        super().connection_made(transport)
        self._guard.waiting(self, self._guard.idle)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timer()
        if self._address is not None:
            self._guard.release(self, self._address)
            self._address = None
        super().connection_lost(exc)

    # -- timeouts ---------------------------------------------------------------------------

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if data and not self._in_head and not self._request_in_flight():
            self._in_head = True  # the first byte of a request: its headers are due
            self._guard.waiting(self, self._guard.heads)
            self._timer = self._loop.call_later(self._guard.limits.header_timeout,
                                                self._head_late)  # fmt: skip
        before = self._request_count
        super().data_received(data)
        if self._request_count != before and self._messages:  # a request's head is in
            self._in_head = False
            self._stop_timer()
            self._guard.working(self)
            payload = self._messages[-1][1]
            if isinstance(payload, StreamReader) and not payload.is_eof():
                self._timer = self._loop.call_later(self._guard.limits.body_timeout,
                                                    self._body_late, payload)  # fmt: skip
                payload.on_eof(self._stop_timer)

    def _request_in_flight(self) -> bool:
        return bool(self._messages) or self._current_request is not None

    def _head_late(self) -> None:
        self._timer = None
        if not self._in_head or self.transport is None:
            return
        self._guard.log.note("requests whose headers came too slowly (408)")
        late = f"the request headers took longer than {self._guard.limits.header_timeout:g} s"
        self.transport.write(_canned(408, "Request Timeout", "request_timeout", late))
        self.force_close()

    def _body_late(self, payload: StreamReader) -> None:
        self._timer = None
        if payload.is_eof() or self.transport is None:
            return
        self._guard.log.note("requests whose body came too slowly (408)")
        limit = self._guard.limits.body_timeout
        # Whoever reads the body gets this (the error middleware answers 408); the connection
        # is not kept alive after that answer.
        payload.set_exception(BodyTimeout(f"the request body took longer than {limit:g} s"))
        self.close()

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if not self._messages and self._address is not None:
                self._guard.waiting(self, self._guard.idle)

    # -- errors aiohttp answers itself ------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON error shape for what never reached the application: a malformed request
        (counted, not logged one by one) or an exception that escaped every middleware."""
        code, text = "internal_error", "internal server error"
        if isinstance(exc, HttpProcessingError):
            self._guard.log.note("malformed requests (4xx)")
            if 400 <= exc.code < 500:
                status = exc.code
            code, text = "bad_request", (exc.message or "bad request").split("\n", 1)[0]
            if isinstance(exc, LineTooLong):
                code = "line_too_long"
                text = f"the request line or a header is longer than {self.max_line_size} bytes"
            text = text.rstrip(": ")
        elif isinstance(exc, ConnectionError | RequestPayloadError | PapayyaError):
            self._guard.log.note("clients gone or cut off mid-request")
        elif status == 504:
            code, text = "timeout", "the request timed out"
        else:
            self.logger.exception("error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("the response has been started, cannot send an error")
        self._quiet_access = True
        response = web.json_response(error_body(code, text), status=status)
        response.headers["X-Request-Id"] = uuid.uuid4().hex
        response.force_close()
        return response

    def log_access(
        self, request: BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        if self._quiet_access:  # counted by handle_error instead
            self._quiet_access = False
            return
        super().log_access(request, response, time)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, ConnectionError | RequestPayloadError | PapayyaError):
            # A client that left, or whose body was refused, after its answer: counted.
            self._guard.log.note("clients gone or cut off mid-request")
            return
        super().log_exception(*args, **kw)


class BodyTimeout(RequestTimeout):
    """The request body did not arrive in time."""


class GuardedServer(web.Server):
    """aiohttp's server, making ``GuardedHandler`` protocols."""

    def __init__(self, made: web.Server, guard: Guard, handler_args: dict[str, Any]) -> None:
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation,
                         **handler_args)  # fmt: skip
        self.guard = guard
        self._handler_args = handler_args

    def __call__(self) -> RequestHandler:
        loop = asyncio.get_running_loop()
        return GuardedHandler(self, loop=loop, guard=self.guard, **self._handler_args)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are bounded by ``limits``."""

    def __init__(self, app: web.Application, limits: Limits, fd_limit: int | None = None):
        self.limits = limits
        self.fd_limit = fd_limit if fd_limit is not None else raise_fd_limit()
        self.guard = Guard(limits, connection_cap(limits, self.fd_limit))
        self._handler_args: dict[str, Any] = {
            "keepalive_timeout": limits.idle_timeout,
            "max_line_size": limits.max_line_bytes,
            "max_field_size": limits.max_line_bytes,
            "max_headers": limits.max_headers,
            "lingering_time": min(10.0, limits.body_timeout),
        }
        super().__init__(app, **self._handler_args)
        self._previous_handler: Any = None

    async def _make_server(self) -> web.Server:
        # aiohttp offers no public way to choose the protocol class: wrap what it made.
        made = await super()._make_server()
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        logged = accesslog.handler_args(self.limits.access_log)
        return GuardedServer(made, self.guard, {**self._handler_args, **logged})

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio logs a failed accept (out of descriptors) every time; count it instead.
        if context.get("message") == "socket.accept() out of system resource":
            self.guard.log.note("accepts failed for want of file descriptors")
        elif self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    async def cleanup(self) -> None:
        await super().cleanup()
        self.guard.log.close()

    async def start(
        self, host: str, port: int, path: str | None = None, sock: socket.socket | None = None
    ) -> list[web.BaseSite]:
        """Listen on ``host:port`` (or the socket ``sock``, bound already) and, if given, the
        Unix socket ``path``."""
        sites: list[web.BaseSite] = [
            web.TCPSite(self, host, port, backlog=ACCEPT_BURST)
            if sock is None
            else web.SockSite(self, sock, backlog=ACCEPT_BURST)
        ]
        if path is not None:
            sites.append(web.UnixSite(self, path, backlog=ACCEPT_BURST))
        for site in sites:
            await site.start()
            _deepen(site, self.limits.backlog)
        return sites


def serve(
    app: web.Application,
    host: str,
    port: int,
    path: str | None,
    limits: Limits,
    *,
    sock: socket.socket | None = None,
    before_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM (what ``web.run_app`` does, with the limits).
    ``sock``: a listening socket bound beforehand (so a port in use is found before anything
    starts). ``before_stop`` runs after the signal, while the app still serves: a worker in
    the process drains there, its agents still able to report."""

    async def main() -> None:
        runner = GuardedRunner(app, limits)
        log.info("http: at most %d connections (%d per address), descriptor limit %d",
                 runner.guard.cap, limits.max_connections_per_address, runner.fd_limit)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner.setup()
        try:
            await runner.start(host, port, path, sock)
            await stop.wait()
            if before_stop is not None:
                await before_stop()
        finally:
            await runner.cleanup()

    asyncio.run(main())
