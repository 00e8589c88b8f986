"""The API's access log: one short line per request, on the ``papayya.access`` logger at INFO.

aiohttp's own ``AccessLogger`` builds every line from its format atoms, a dozen calls per
request, and was 6% of the API's CPU in the end-to-end benchmark. These loggers write a
fixed line with ``%``-arguments that are formatted only if a handler takes the record:

    <remote> <method> <path?query> <status> <bytes>B <ms>ms <request id>

``PAPAYYA_HTTP_ACCESS_LOG`` chooses which requests are logged (``web.listener.Limits``):
``errors`` (the default) those not answered 2xx (refusals, errors, redirects: what an
operator looks for), ``all`` every request, ``off`` none. A log level above ``info``
(``PAPAYYA_LOG_LEVEL``) silences them all.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

MODES: Final = ("errors", "all", "off")
LOGGER: Final = logging.getLogger("papayya.access")
LINE: Final = "%s %s %s %d %dB %.1fms %s"


class AllAccessLogger(AbstractAccessLogger):
    """Every request, one line."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            LINE, request.remote, request.method, request.path_qs, response.status,
            response.body_length, time * 1000, response.headers.get("X-Request-Id", "-"),
        )  # fmt: skip


class ErrorAccessLogger(AllAccessLogger):
    """The requests not answered 2xx; a 2xx costs one comparison."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if not 200 <= response.status < 300:
            super().log(request, response, time)


def handler_args(mode: str) -> dict[str, object]:
    """The access-log arguments of aiohttp's request handler for ``mode`` (``MODES``)."""
    if mode == "off":
        return {"access_log": None}
    cls = AllAccessLogger if mode == "all" else ErrorAccessLogger
    return {"access_log": LOGGER, "access_log_class": cls}
