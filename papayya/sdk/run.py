"""A run as agent code sees it: checkpointed tasks, then complete or fail."""

from __future__ import annotations

import ctypes
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, overload

import msgspec

from papayya.background import BackgroundLoop
from papayya.domain.matcher import Recorded, Replayer, task_fingerprint, task_label
from papayya.domain.state import RunState
from papayya.errors import (
    BudgetExhausted,
    Conflict,
    CreditExhausted,
    InvalidInput,
    InvalidTask,
    PapayyaError,
    RunCancelled,
    RunFinished,
)
from papayya.money import usd_to_micro
from papayya.sdk.direct import Opened, encode_result
from papayya.sdk.llm_usage import extract_llm_usage, is_credit_exhaustion
from papayya.sdk.results import NO_CONTEXT, DurableRunResult, StepContext, TaskEntry

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger(__name__)


class Backend(Protocol):
    """Where a run's steps are written: ``DirectBackend`` (Postgres) or ``HttpBackend`` (the
    durable checkpoints API). Each write takes the run's state and returns the new one."""

    async def open(
        self,
        run_id: str,
        agent: str,
        *,
        input: Any,
        metadata: dict[str, Any] | None,
        budget_micro_usd: int | None,
        replay_of: str | None,
        from_step: int | None,
        item_id: str | None = None,
    ) -> Opened: ...

    async def record_task(
        self,
        state: RunState,
        label: str,
        fingerprint: str,
        raw: bytes,
        duration_ms: float,
        context: StepContext = ...,
    ) -> RunState: ...

    async def record_task_error(
        self,
        state: RunState,
        label: str,
        error: BaseException,
        duration_ms: float,
        context: StepContext = ...,
    ) -> RunState: ...

    async def complete(self, state: RunState, raw: bytes) -> RunState: ...

    async def fail(self, state: RunState, code: str, message: str) -> RunState: ...

    async def result_of(self, recorded: Recorded) -> Any: ...

    async def heartbeat(self, state: RunState, token: str | None) -> RunState: ...

    async def record_cost(
        self, state: RunState, label: str, fingerprint: str, micro_usd: int
    ) -> RunState: ...


class Run:
    """A checkpointed run, a drop-in for the published SDK's ``PapayyaRun``. Not created
    directly: use ``papayya().run(agent)``.

    Each call of a ``task`` (or ``step``) is one ``checkpoint`` step. When the same run id is
    opened again (after a crash, say), tasks that finished before are answered from their
    recorded results, in order, without running; the first task that differs, and every one
    after it, runs live. Recorded results come back as JSON values (a tuple comes back as a
    list, a provider's response object as its dict).
    """

    def __init__(
        self,
        loop: BackgroundLoop,
        backend: Backend,
        opened: Opened,
        heartbeat_seconds: float | None = None,
        item_id: str | None = None,
    ) -> None:
        self._loop = loop
        self._backend = backend
        self._state = opened.state
        self._replayer = Replayer(opened.recording, until_step=opened.until_step)
        self._copy_answers = opened.copy_answers
        self._run_token = opened.run_token
        self._cancelled = opened.state.status == "cancelled"
        self._owner = threading.get_ident()
        self._stopped = threading.Event()
        self._beats: threading.Thread | None = None
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._finished = False
        self._item: str | None = item_id or _str(opened.state.metadata.get("item_id"))
        self._entries: dict[str, TaskEntry] = {}
        self._unresolved: dict[str, Recorded] = {}
        if not opened.copy_answers:
            self._seed(opened.recording)
        if heartbeat_seconds is not None and opened.state.status == "running":
            self._beats = threading.Thread(
                target=self._heartbeat, args=(heartbeat_seconds,), daemon=True,
                name=f"papayya-heartbeat-{self.id}",
            )  # fmt: skip
            self._beats.start()

    @property
    def id(self) -> str:
        return self._state.run_id

    @property
    def state(self) -> RunState:
        """The run as folded from its events so far."""
        return self._state

    @property
    def status(self) -> str:
        return self._state.status

    @property
    def diverged_at_step(self) -> int | None:
        """The recorded step the code stopped matching at, if it did."""
        return self._replayer.diverged_at_step

    @property
    def run_id(self) -> str:
        """The run's id (as the published SDK names it; ``id`` too)."""
        return self._state.run_id

    @property
    def agent(self) -> str:
        return self._state.agent_id

    @property
    def completed_tasks(self) -> list[str]:
        """Labels of the run's finished tasks in the order they finished, those recorded before
        this process opened the run first (a repeated label is numbered ``label#2``…)."""
        return list(self._entries)

    # -- tasks ------------------------------------------------------------------------

    @overload
    def task(
        self,
        label_or_fn: str,
        fn: Callable[P, T],
        *,
        item_id: str | None = None,
        snapshot: Any = None,
        kind: str | None = None,
    ) -> Callable[P, T]: ...
    @overload
    def task(
        self,
        label_or_fn: str,
        *,
        item_id: str | None = None,
        snapshot: Any = None,
        kind: str | None = None,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]: ...
    @overload
    def task(
        self,
        label_or_fn: Callable[P, T],
        *,
        item_id: str | None = None,
        snapshot: Any = None,
        kind: str | None = None,
    ) -> Callable[P, T]: ...

    def task(
        self,
        label_or_fn: Any = None,
        fn: Any = None,
        *,
        item_id: str | None = None,
        snapshot: Any = None,
        kind: str | None = None,
    ) -> Any:
        """Wrap a function as a checkpointed task (alias: ``run.step``), as the published SDK
        does: nothing runs until the returned function is called, and each call is a step.

        - ``run.task("search", fn)(*args)``: explicit label;
        - ``run.task(fn)(*args)``: labelled ``fn.__name__`` (a lambda needs a label);
        - ``@run.task("search")`` on a function: every call is a task.

        A coroutine function gives a coroutine function. A repeated label is numbered
        ``label#2``, ``label#3``… so each call of a loop is a step of its own; a task that
        raises is recorded as a failed step and the exception goes on.

        ``item_id`` tags the step with the record it acts on (the first one given becomes the
        run's, which later steps inherit); with an item id in effect, ``snapshot`` is kept as
        the step's input and the result as its output. ``kind="llm"`` reads the token usage,
        model and stop reason from the provider response the function returns and keeps them
        with the step; a provider error that says the credits are spent is raised as
        ``CreditExhausted``.
        """
        opts = _Options(item_id, snapshot, kind)
        if item_id is not None and (not isinstance(item_id, str) or not item_id.strip()):
            raise InvalidTask("item_id must be a non-empty string")
        if kind is not None and not isinstance(kind, str):
            raise InvalidTask("kind must be a string, such as 'llm'")
        if isinstance(label_or_fn, str):
            try:
                task_label(label_or_fn, {})  # a label no step may have is refused now
            except InvalidInput as exc:
                raise InvalidTask(str(exc)) from None
            if fn is None:
                return functools.partial(self._wrap, label_or_fn, opts)
            return self._wrap(label_or_fn, opts, fn)
        if fn is None and callable(label_or_fn):
            name = getattr(label_or_fn, "__name__", "")
            if not name or name == "<lambda>":
                raise InvalidTask(
                    "anonymous and lambda functions need a label: run.task('label', lambda: ...)"
                )
            return self._wrap(name, opts, label_or_fn)
        raise InvalidTask("run.task takes a label (str) and/or a function")

    step = task

    def _wrap(self, label: str, opts: _Options, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise InvalidTask(f"task {label!r} wraps a function, not {type(fn).__name__}")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def acall(*args: Any, **kwargs: Any) -> Any:
                return await self._async_task(label, opts, fn, args, kwargs)

            return acall

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._sync_task(label, opts, fn, args, kwargs)

        return call

    def _next(self, label: str) -> tuple[str, str, Recorded | None]:
        """The call's numbered label, its fingerprint, and its recorded answer if it has one."""
        if self._finished:
            raise RunFinished(f"run {self.id} is already finished: open a new run to continue")
        with self._lock:
            numbered = task_label(label, self._counts)
            fingerprint = task_fingerprint(numbered)
            return numbered, fingerprint, self._replayer.match("task", fingerprint)

    def _item_id(self, opts: _Options) -> str | None:
        """The item the step acts on: its own, else the run's (which the first one sets)."""
        if opts.item_id is not None and self._item is None:
            self._item = opts.item_id
        return opts.item_id if opts.item_id is not None else self._item

    def _sync_task(
        self, label: str, opts: _Options, fn: Callable[..., Any], args: Any, kw: Any
    ) -> Any:
        numbered, fingerprint, recorded = self._next(label)
        if recorded is not None:
            return self._loop.call(self._answer(numbered, fingerprint, recorded))
        self._ensure_live()
        item = self._item_id(opts)
        started = time.perf_counter()
        try:
            result = fn(*args, **kw)
        except Exception as exc:
            context = _error_context(opts, item)
            self._loop.call(self._record_error(numbered, exc, started, context))
            _raise_credit(numbered, opts, exc)
            raise
        if inspect.isawaitable(result):
            raise InvalidInput(f"task {numbered!r} returned an awaitable: pass an async def")
        raw, context = _recordable(result, opts, item)
        self._loop.call(self._record(numbered, fingerprint, result, raw, started, context))
        return result

    async def _async_task(
        self, label: str, opts: _Options, fn: Callable[..., Awaitable[Any]], args: Any, kw: Any
    ) -> Any:
        numbered, fingerprint, recorded = self._next(label)
        if recorded is not None:
            return await self._loop.acall(self._answer(numbered, fingerprint, recorded))
        self._ensure_live()
        item = self._item_id(opts)
        started = time.perf_counter()
        try:
            result = await fn(*args, **kw)
        except Exception as exc:
            context = _error_context(opts, item)
            await self._loop.acall(self._record_error(numbered, exc, started, context))
            _raise_credit(numbered, opts, exc)
            raise
        raw, context = _recordable(result, opts, item)
        await self._loop.acall(self._record(numbered, fingerprint, result, raw, started, context))
        return result

    def _ensure_live(self) -> None:
        self._check_cancelled()
        if self._state.is_terminal:
            raise RunFinished(f"run {self.id} is {self._state.status}; it runs no new tasks")

    def _check_cancelled(self) -> None:
        """``RunCancelled`` if the run was cancelled (or asked to stop: it ends so now)."""
        if self._state.cancel_requested and not self._cancelled:
            self._beat()  # asked to stop: end the run cancelled now
        if self._cancelled or self._state.status == "cancelled":
            self._cancelled = True
            self.stop_heartbeat()
            raise RunCancelled(f"run {self.id} was cancelled")

    async def _answer(self, label: str, fingerprint: str, recorded: Recorded) -> Any:
        result = await self._backend.result_of(recorded)
        if self._copy_answers:
            # A replay keeps its own complete timeline: the answered step is recorded again,
            # with no duration since nothing ran.
            raw = encode_result(result)
            self._state = await self._backend.record_task(self._state, label, fingerprint, raw, 0)
            self._entries[label] = self._entry(label, result, 0, NO_CONTEXT)
        return result

    async def _record(
        self,
        label: str,
        fingerprint: str,
        result: Any,
        raw: bytes,
        started: float,
        context: StepContext,
    ) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self._state = await self._backend.record_task(
            self._state, label, fingerprint, raw, elapsed, context
        )
        self._entries[label] = self._entry(label, result, elapsed, context)

    async def _record_error(
        self, label: str, error: BaseException, started: float, context: StepContext
    ) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self._state = await self._backend.record_task_error(
            self._state, label, error, elapsed, context
        )

    def _entry(self, label: str, result: Any, elapsed: float, context: StepContext) -> TaskEntry:
        at = datetime.now(UTC).isoformat()
        if context is NO_CONTEXT:
            return TaskEntry(label, result, round(elapsed), at)
        return TaskEntry(label, result, round(elapsed), at, **context.entry_fields())

    def _seed(self, recording: list[Recorded]) -> None:
        """The tasks recorded before this process opened the run, as ``TaskEntry``s."""
        steps = self._state.steps
        for rec in recording:
            if not 0 <= rec.step_number < len(steps) or steps[rec.step_number].label is None:
                continue
            step = steps[rec.step_number]
            at = step.completed_at.isoformat() if step.completed_at else ""
            entry = TaskEntry(step.label or "", rec.result, round(step.duration_ms or 0), at)
            self._entries[entry.label] = entry
            if rec.result_ref is not None:
                self._unresolved[entry.label] = rec

    # -- model calls ------------------------------------------------------------------

    def wrap(self, client: Any) -> Any:
        """A copy of an official ``openai`` or ``anthropic`` client (sync or async) whose calls
        are steps of this run: recorded, priced, held to the run's budget and answered from
        the recording when the run resumes or replays.

        In direct mode the metering runs in this process and calls go to the client's own
        provider with its own key. In HTTP mode the copy talks to the server's gateway with
        this attempt's run token, so the server meters the calls with the keys it holds."""
        from papayya.sdk import llm

        gateway_url = getattr(self._backend, "gateway_url", None)
        if gateway_url is not None:
            if self._run_token is None:
                raise Conflict("this server gives no run token: upgrade it to meter model calls")
            url = gateway_url(llm.provider_of(client))
            return llm.through_gateway(client, url, self._run_token)
        meter = getattr(self._backend, "meter", None)
        if meter is None:
            raise Conflict("this backend cannot meter model calls")
        return llm.wrap(self, self._loop, self._loop.call(meter()), client)

    def _options(self, provider: str, options: dict[str, Any]) -> dict[str, Any]:
        """The client's options: in HTTP mode the gateway's and the run token; in direct mode
        the caller's key, else the one a server would hold (``PAPAYYA_OPENAI_API_KEY``…)."""
        from papayya.sdk import llm

        gateway_url = getattr(self._backend, "gateway_url", None)
        if gateway_url is not None and self._run_token is not None:
            return {**options, "base_url": gateway_url(provider), "api_key": self._run_token}
        return {**llm.server_defaults(provider), **options}

    def openai(self, **options: Any) -> Any:
        """``openai.OpenAI(**options)``, metered into this run."""
        import openai

        return self.wrap(openai.OpenAI(**self._options("openai", options)))

    def async_openai(self, **options: Any) -> Any:
        """``openai.AsyncOpenAI(**options)``, metered into this run."""
        import openai

        return self.wrap(openai.AsyncOpenAI(**self._options("openai", options)))

    def anthropic(self, **options: Any) -> Any:
        """``anthropic.Anthropic(**options)``, metered into this run."""
        import anthropic

        return self.wrap(anthropic.Anthropic(**self._options("anthropic", options)))

    def async_anthropic(self, **options: Any) -> Any:
        """``anthropic.AsyncAnthropic(**options)``, metered into this run."""
        import anthropic

        return self.wrap(anthropic.AsyncAnthropic(**self._options("anthropic", options)))

    def refresh(self) -> RunState:
        """Re-read the run (after model calls, which the meter appends)."""
        refresh = getattr(self._backend, "runs", None)
        if refresh is not None:
            self._state = self._loop.call(refresh.refresh(self._state))
        return self._state

    # -- costs the SDK cannot see ------------------------------------------------------

    def record_cost(self, usd: float | str | Decimal, label: str = "cost") -> None:
        """Record a cost the SDK cannot see (a paid search API, say) as a step of its own that
        counts against the run's budget. Like a task, it is answered from the recording when
        the run resumes, so it is counted once. ``BudgetExhausted`` if it spent the budget
        (the run then ends ``budget_exceeded``)."""
        if not isinstance(label, str) or not label.strip():
            raise InvalidInput("record_cost's label must be a non-empty string")
        micro = usd_to_micro(usd)
        if micro is None or micro < 0:
            raise InvalidInput("record_cost takes an amount of USD >= 0")
        with self._lock:
            numbered = task_label(label, self._counts)
            fingerprint = task_fingerprint(numbered)
            recorded = self._replayer.match("task", fingerprint)
        if recorded is not None:
            return  # counted when it was first recorded
        self._ensure_live()
        record = self._backend.record_cost(self._state, numbered, fingerprint, micro)
        self._state = self._loop.call(record)
        if self._state.status == "budget_exceeded":
            self.stop_heartbeat()
            raise BudgetExhausted(self._state.error_message or None)

    # -- liveness ---------------------------------------------------------------------

    def _heartbeat(self, interval: float) -> None:
        """The heartbeat thread: a beat every ``interval`` seconds while the run is open, from
        a thread of its own, so that it beats while user code blocks. When the run was
        cancelled, ``RunCancelled`` is raised in the thread that opened the run."""
        while not self._stopped.wait(interval):
            try:
                self._beat()
            except PapayyaError as exc:  # the server or database is away: try next time
                log.warning("papayya: heartbeat of run %s failed: %s", self.id, exc)
                continue
            if self._cancelled:
                self._stopped.set()
                _raise_in(self._owner, RunCancelled)
                return

    def _beat(self) -> None:
        if self._stopped.is_set() and threading.get_ident() != self._owner:
            return
        state = self._loop.call(self._backend.heartbeat(self._state, self._run_token))
        if state.status == "cancelled":
            self._cancelled = True
            self._state = state
        elif state.is_terminal:  # ended elsewhere (abandoned, say): nothing more to beat
            self._stopped.set()

    def stop_heartbeat(self) -> None:
        """Stop beating (the run ended, or its client closes)."""
        self._stopped.set()
        beats = self._beats
        if beats is not None and beats is not threading.current_thread():
            beats.join()

    @property
    def cancelled(self) -> bool:
        """Whether the run was cancelled (the SDK raises ``RunCancelled`` in the run's code)."""
        return self._cancelled

    # -- the end ----------------------------------------------------------------------

    def complete(self, output: Any = None) -> DurableRunResult:
        """Record the run's result and return its summary. ``RunFinished`` (a
        ``RuntimeError``, as published) if this run object already ended; completing a run
        that completed before with the same output does nothing, with another a ``Conflict``."""
        if self._finished:
            raise RunFinished(f"run {self.id} is already finished: open a new run to continue")
        self._check_cancelled()
        raw = encode_result(output)
        self._state = self._loop.call(self._backend.complete(self._state, raw))
        self._finished = True
        self.stop_heartbeat()
        return self._result()

    def fail(self, error: Any = None, code: str = "agent_error") -> DurableRunResult:
        """Record that the run failed with ``error`` (an exception, a message, any JSON value,
        or nothing) and return its summary. A run that already ended is left as it is."""
        if not (self._finished or self._state.is_terminal or self._cancelled):
            message = _failure_text(error)
            self._state = self._loop.call(self._backend.fail(self._state, code, message))
        self._finished = True
        self.stop_heartbeat()
        return self._result()

    def _result(self) -> DurableRunResult:
        for label, recorded in list(self._unresolved.items()):
            self._entries[label].result = self._loop.call(self._backend.result_of(recorded))
            del self._unresolved[label]
        tasks = list(self._entries.values())
        total = sum(t.duration_ms for t in tasks)
        return DurableRunResult(self.id, self.agent, self._state.status, tasks, total)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, RunCancelled) or (exc is not None and self._cancelled):
            self.stop_heartbeat()  # it ended cancelled already
        elif exc is not None and isinstance(exc, Exception):
            self.fail(exc)
        else:
            self.stop_heartbeat()


class _Options(NamedTuple):
    """A task's keyword arguments."""

    item_id: str | None
    snapshot: Any
    kind: str | None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _error_context(opts: _Options, item: str | None) -> StepContext:
    return StepContext(item_id=item, kind="llm" if opts.kind == "llm" else None)


def _recordable(result: Any, opts: _Options, item: str | None) -> tuple[bytes, StepContext]:
    """The result's JSON, and the step's context: with an item in effect the snapshot as its
    input and the result as its output; with ``kind="llm"`` the usage the response reports."""
    raw = encode_result(result)
    llm = opts.kind == "llm"
    if item is None and not llm:
        return raw, NO_CONTEXT  # the common case, kept cheap
    context = StepContext(
        item_id=item,
        input_snapshot=_json(opts.snapshot) if item is not None else None,
        output_snapshot=msgspec.json.decode(raw) if item is not None else None,
        kind="llm" if llm else None,
        llm=extract_llm_usage(result) if llm else None,
    )
    return raw, context


def _json(value: Any) -> Any:
    """``value`` as the JSON value it is recorded as (``InvalidInput`` if it has none)."""
    return None if value is None else msgspec.json.decode(encode_result(value))


def _raise_credit(label: str, opts: _Options, exc: Exception) -> None:
    """A model call's error that says the provider's credits are spent, as
    ``CreditExhausted`` (what the published SDK raises for it)."""
    if opts.kind == "llm" and not isinstance(exc, CreditExhausted) and is_credit_exhaustion(exc):
        raise CreditExhausted(f"{label}: provider credits exhausted ({exc})") from exc


def _failure_text(error: Any) -> str:
    """A failure's message: an exception as ``Type: message``, a string as is, anything else
    as JSON (its repr if it has none)."""
    if error is None:
        return "the run failed"
    if isinstance(error, str):
        return error
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    try:
        return encode_result(error).decode()
    except InvalidInput:
        return repr(error)


def _raise_in(thread_id: int, error: type[BaseException]) -> None:
    """Raise ``error`` in the thread ``thread_id`` at its next Python instruction: how the
    heartbeat thread tells user code, wherever it is, that its run was cancelled."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))
