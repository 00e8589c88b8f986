"""The triggers' errors: subclasses of the root in ``papayya.errors``, so the web middleware
maps them like any other (``code`` and ``http_status``)."""

from __future__ import annotations

from papayya.errors import InvalidInput, PapayyaError, Unauthorized


class InvalidCron(InvalidInput):
    """The cron expression is not valid."""

    code = "invalid_cron"


class InvalidTimezone(InvalidInput):
    """The timezone is not an IANA timezone name."""

    code = "invalid_timezone"


class InvalidSignature(Unauthorized):
    """The request is not signed with this webhook's secret (Standard Webhooks)."""

    code = "invalid_signature"


class RateLimited(PapayyaError):
    """Too many requests; try again later."""

    code = "rate_limited"
    http_status = 429
