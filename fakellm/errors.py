"""Provider-shaped errors: one exception, rendered as OpenAI or Anthropic would render it."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from aiohttp import web

Provider = Literal["openai", "anthropic"]

# Anthropic names the error kind by status; the SDKs map statuses to exception classes.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {429: "requests", 500: "server_error", 502: "server_error", 503: "server_error"}
_OPENAI_CODES = {429: "rate_limit_exceeded"}
_DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "Invalid authentication.",
    404: "Not found.",
    429: "Rate limit reached. Please try again later.",
    500: "The server had an error while processing your request. Sorry about that!",
    529: "Overloaded",
}


class ProviderError(Exception):
    """The fake provider refused the request."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message or _DEFAULT_MESSAGES.get(status, f"Error {status}."))
        self.http_status = status
        self.openai_code = code if code is not None else _OPENAI_CODES.get(status)
        self.param = param
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self)


def provider_of(path: str) -> Provider:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


def error_body(provider: Provider, error: ProviderError) -> dict[str, Any]:
    if provider == "anthropic":
        kind = _ANTHROPIC_TYPES.get(error.http_status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": error.message},
            "request_id": request_id(),
        }
    fallback = "server_error" if error.http_status >= 500 else "invalid_request_error"
    return {
        "error": {
            "message": error.message,
            "type": _OPENAI_TYPES.get(error.http_status, fallback),
            "param": error.param,
            "code": error.openai_code,
        }
    }


def error_response(provider: Provider, error: ProviderError) -> web.Response:
    response = web.json_response(error_body(provider, error), status=error.http_status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = f"{error.retry_after:g}"
        response.headers["Retry-After-Ms"] = str(round(error.retry_after * 1000))
    return response
