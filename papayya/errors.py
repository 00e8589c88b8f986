"""The one exception root. Each subclass's docstring is its default message.

Web code maps these to HTTP statuses in one middleware (``http_status`` and ``code``).
"""

from __future__ import annotations


class PapayyaError(Exception):
    """Papayya failed."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(PapayyaError):
    """The input is not valid."""

    code = "invalid_input"
    http_status = 400


class InvalidEvent(InvalidInput):
    """The event is not valid."""

    code = "invalid_event"


class InvalidCursor(InvalidInput):
    """The cursor is not one that this store issued."""

    code = "invalid_cursor"


class PayloadTooLarge(InvalidInput):
    """The content is larger than the store accepts."""

    code = "payload_too_large"
    http_status = 413


class RequestTimeout(PapayyaError):
    """The request did not arrive in time."""

    code = "request_timeout"
    http_status = 408


class NotFound(PapayyaError):
    """Not found."""

    code = "not_found"
    http_status = 404


class RouteNotSupported(NotFound):
    """This route of the hosted Papayya API is not supported by this server."""

    code = "route_not_supported"


class Conflict(PapayyaError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409


class ConcurrencyError(Conflict):
    """The stream is not at the expected version; nothing was written."""

    code = "concurrency_conflict"


class IdempotencyConflict(Conflict):
    """An event with this id was already appended with a different payload."""

    code = "idempotency_conflict"


class StoreUnavailable(PapayyaError):
    """The event store cannot be reached."""

    code = "store_unavailable"
    http_status = 503


class RunNotFound(NotFound):
    """The run does not exist."""

    code = "run_not_found"


class StepNotFound(NotFound):
    """The run has no such step."""

    code = "step_not_found"


class IllegalTransition(Conflict):
    """The event is not allowed in the run's current state."""

    code = "illegal_transition"


class StepLimitReached(IllegalTransition):
    """The run has reached its max_steps."""

    code = "max_steps_exceeded"


class BudgetExhausted(PapayyaError):
    """The run's remaining budget does not cover this call."""

    code = "budget_exceeded"
    http_status = 402


class Unauthorized(PapayyaError):
    """A valid API key is required (X-Api-Key: cpk_… or Authorization: Bearer cpk_…)."""

    code = "unauthorized"
    http_status = 401


class ProjectionFailing(PapayyaError):
    """A projector cannot get past an event: the read models are going stale."""

    code = "projection_failing"
    http_status = 503


class NotReady(PapayyaError):
    """A part this process needs is not working (the database, the queue or a projector)."""

    code = "not_ready"
    http_status = 503


class ProjectionNotFound(NotFound):
    """There is no projection of that name."""

    code = "projection_not_found"


class RebuildInProgress(Conflict):
    """A rebuild of this projection is already running."""

    code = "rebuild_in_progress"


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


class ProcessRuntimeNotAllowed(PapayyaError):
    """The process runtime is not enabled for this project (PAPAYYA_PROCESS_RUNTIME)."""

    code = "process_runtime_not_allowed"
    http_status = 403


class RunCancelled(PapayyaError):
    """The run was cancelled: it runs no more steps."""

    code = "run_cancelled"
    http_status = 409


# -- the published SDK's HTTP error (``papayya.api.PapayyaAPIError`` of ``papayya==0.2.0``) -----


class PapayyaAPIError(PapayyaError):
    """The API answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        # As published: ``status`` is the HTTP status, the message ``HTTP {status}: {body}``.
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


# -- the published SDK's names ------------------------------------------------------------------
# Code written for the published ``papayya`` SDK catches its exceptions by these names (and by
# the built-in bases it raises): ours are the same names, or subclass the same built-ins, so
# that such code keeps catching what it caught.


class InvalidTask(InvalidInput, ValueError, TypeError):
    """``run.task`` takes a label (str) and/or a function, and a lambda needs a label."""

    code = "invalid_task"


class RunFinished(Conflict, RuntimeError):
    """The run is already finished: create a new run to continue."""

    code = "run_finished"


class CreditExhausted(PapayyaError):
    """The model provider reports that the account's credits or quota are exhausted."""

    code = "credit_exhausted"
    http_status = 402


# The published SDK calls a spent budget ``BudgetExceeded``.
BudgetExceeded = BudgetExhausted
