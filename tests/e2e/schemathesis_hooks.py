"""Checks of our own for ``st run`` (loaded through ``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def error_body_is_well_formed(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx is JSON ``{"error": {"code": str, "message": str}}`` (the gateway's
    routes answer in their provider's shape: ``{"error": {"message": str, …}}``)."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content or b"")
    except ValueError:
        raise AssertionError(f"error body is not JSON: {response.content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"no error object: {body!r}"
    assert isinstance(error.get("message"), str), f"error without a message: {body!r}"
    if not case.operation.path.startswith("/v1/llm/"):
        assert isinstance(error.get("code"), str), f"error without a code: {body!r}"
    return None
