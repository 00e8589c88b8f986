"""Request decoding, JSON responses and pagination: the few helpers every handler uses."""

from __future__ import annotations

import base64
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from papayya.errors import InvalidInput, NotFound, PayloadTooLarge
from web import keys

T = TypeVar("T")
MAX_BODY_BYTES: Final = 1024 * 1024
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 200
_encoder = msgspec.json.Encoder()


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


def json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


async def body(request: web.Request, type_: type[T]) -> T:
    """The request body decoded strictly into ``type_`` (unknown fields are refused)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if not raw.strip():
        raise InvalidInput("the request body must be a JSON object")
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None


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
