"""Request decoding, JSON responses and pagination: the few helpers every handler uses."""

from __future__ import annotations

import base64
import re
from array import array
from itertools import accumulate
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from papayya.errors import InvalidInput, NotFound, PayloadTooLarge
from web import keys

T = TypeVar("T")
MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
# How deep a JSON body may nest: far above what real payloads use, and far below the
# recursion limit of every decoder that meets the value later (msgspec, json, the projectors).
MAX_JSON_DEPTH: Final = 128
_encoder = msgspec.json.Encoder()


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def page(request: web.Request, items: list[Any], cursor: str | None = None) -> web.Response:
    """A list's answer: the bare JSON array of ``items``. When there is more, the next page's
    address goes in a ``Link: <…>; rel="next"`` header and its cursor in ``X-Next-Cursor``
    (the published SDK and CLI read a list's body as the array itself)."""
    response = json(items)
    if cursor is not None:
        response.headers["Link"] = f'<{request.rel_url.update_query(cursor=cursor)}>; rel="next"'
        response.headers["X-Next-Cursor"] = cursor
    return response


async def read_body(request: web.Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw request body, at most ``limit`` bytes, decoded from its Content-Encoding."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        raw = await request.read()
    except RequestPayloadError as exc:  # a bad gzip/deflate body, a broken chunked encoding
        raise InvalidInput(f"the request body cannot be read: {_reason(exc)}") from None
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return raw


def _reason(exc: RequestPayloadError) -> str:
    cause = exc.__cause__ or exc
    return getattr(cause, "message", None) or str(cause).strip().splitlines()[-1].strip()


def decode_json(raw: bytes, type_: type[T] = Any) -> T:  # type: ignore[assignment]
    """``raw`` decoded strictly into ``type_``: the one way request JSON becomes a value.

    Refuses, as bad input, JSON nested deeper than ``MAX_JSON_DEPTH`` and any string or key
    holding NUL (Postgres text and jsonb cannot store one, so it would fail later as a 500)."""
    try:
        value = msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    # Only now, on JSON known to be well-formed, are the byte scans below linear.
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidInput(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if _NUL_ESCAPE.search(raw):  # a raw NUL byte is not valid JSON: msgspec refused it
        raise InvalidInput("JSON strings must not contain NUL (\\u0000) characters")
    return value


# ``\u0000`` preceded by an even number of backslashes: an escape, not an escaped backslash.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


def json_depth(raw: bytes) -> int:
    """How deep well-formed JSON ``raw`` nests; 0 if it has too few brackets to nest deeper
    than ``MAX_JSON_DEPTH``."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # too few brackets to matter (the common case: no scan at all)
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    return max(accumulate(array("b", brackets.translate(_STEP))), default=0)


async def body(request: web.Request, type_: type[T]) -> T:
    """The request body decoded strictly into ``type_`` (unknown fields are refused)."""
    raw = await read_body(request)
    if not raw.strip():
        raise InvalidInput("the request body must be a JSON object")
    return decode_json(raw, type_)


def project_id(request: web.Request) -> str:
    """The caller's project, set by the auth middleware."""
    return str(request[keys.PROJECT_ID])


def path_id(request: web.Request, name: str = "id") -> str:
    value = request.match_info[name]
    if not value or len(value) > 200:
        raise NotFound(f"{name} not found")
    return value


def query_int(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name} must be an integer") from None
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name} must be from {low} to {high}")
    return value


def limit(request: web.Request) -> int:
    value = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert value is not None
    return value


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(values)).decode().rstrip("=")


def decode_cursor(request: web.Request) -> list[Any] | None:
    """The opaque ``cursor`` query parameter of a list endpoint, or ``None``."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        values = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise InvalidInput("cursor is not one this API issued") from None
    # A NUL would reach Postgres (which cannot hold one) as an error.
    if not isinstance(values, list) or any(isinstance(v, str) and "\x00" in v for v in values):
        raise InvalidInput("cursor is not one this API issued")
    return values
