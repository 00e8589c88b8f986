"""One place that turns exceptions into JSON errors and stamps every response with an id."""

from __future__ import annotations

import logging
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from papayya.errors import PapayyaError

log = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")
    if not (0 < len(request_id) <= 128 and request_id.isascii() and request_id.isprintable()):
        request_id = uuid.uuid4().hex  # a caller's id is echoed only if it is a plain one
    try:
        response = await handler(request)
    except PapayyaError as exc:
        response = web.json_response(error_body(exc.code, exc.message), status=exc.http_status)
    except RequestPayloadError as exc:  # a body that is not the gzip it claims, say
        cause = exc.__cause__ or exc
        message = getattr(cause, "message", "") or "the request body cannot be read"
        response = web.json_response(error_body("invalid_input", message), status=400)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers["X-Request-Id"] = request_id
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = web.json_response(error_body(code, exc.text or exc.reason), status=exc.status)
    except Exception as exc:
        gone = request.transport is None or request.transport.is_closing()
        if isinstance(exc, ConnectionResetError) and gone:
            raise  # the client left mid-request: nobody to answer (the listener counts these)
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = web.json_response(
            error_body("internal_error", "internal server error"), status=500
        )
    response.headers["X-Request-Id"] = request_id
    if response.status >= 400 and request.can_read_body and not request.content.is_eof():
        # A body left unread (refused before it was read, or unreadable) ends the connection:
        # what is left of it cannot be told from the next request.
        response.force_close()
    return response
