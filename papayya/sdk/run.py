"""A run as agent code sees it: checkpointed tasks, then complete or fail."""

from __future__ import annotations

import ctypes
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol, TypeVar, overload

from papayya.background import BackgroundLoop
from papayya.domain.matcher import Recorded, Replayer, task_fingerprint, task_label
from papayya.domain.state import RunState
from papayya.errors import BudgetExhausted, Conflict, InvalidInput, PapayyaError, RunCancelled
from papayya.money import usd_to_micro
from papayya.sdk.direct import Opened, encode_result

T = TypeVar("T")
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
    ) -> Opened: ...

    async def record_task(
        self, state: RunState, label: str, fingerprint: str, raw: bytes, duration_ms: float
    ) -> RunState: ...

    async def record_task_error(
        self, state: RunState, label: str, error: BaseException, duration_ms: float
    ) -> RunState: ...

    async def complete(self, state: RunState, raw: bytes) -> RunState: ...

    async def fail(self, state: RunState, code: str, message: str) -> RunState: ...

    async def result_of(self, recorded: Recorded) -> Any: ...

    async def heartbeat(self, state: RunState, token: str | None) -> RunState: ...

    async def record_cost(
        self, state: RunState, label: str, fingerprint: str, micro_usd: int
    ) -> RunState: ...


class Run:
    """A checkpointed run. Not created directly: use ``papayya().run(agent)``.

    Each ``task`` is one ``checkpoint`` step. When the same run id is opened again (after a
    crash, say), tasks that finished before are answered from their recorded results, in
    order, without running; the first task that differs, and every one after it, runs live.
    Recorded results come back as JSON values (a tuple comes back as a list).
    """

    def __init__(
        self,
        loop: BackgroundLoop,
        backend: Backend,
        opened: Opened,
        heartbeat_seconds: float | None = None,
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

    # -- tasks ------------------------------------------------------------------------

    @overload
    def task(self, label: str) -> Callable[[Callable[..., T]], Callable[..., T]]: ...
    @overload
    def task(self, label: Callable[[], T]) -> T: ...
    @overload
    def task(self, label: str, fn: Callable[[], T]) -> T: ...

    def task(self, label: Any, fn: Any = None) -> Any:
        """Run ``fn`` as a checkpointed step and return its result.

        ``run.task("search", fn)`` and ``run.task(fn)`` (labelled ``fn.__name__``) run ``fn()``
        now; ``@run.task("search")`` makes a function whose every call is a task. A coroutine
        function gives an awaitable. Repeated labels are numbered ``label#2``, ``label#3``…
        """
        if fn is None and callable(label):
            return self._start(label.__name__, label, (), {})
        if not isinstance(label, str):
            raise InvalidInput("run.task takes a label (str) and/or a function")
        if fn is None:
            return functools.partial(self._decorate, label)
        if not callable(fn):
            raise InvalidInput("run.task's second argument must be a function")
        return self._start(label, fn, (), {})

    def _decorate(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise InvalidInput("@run.task(label) decorates a function")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._start(label, fn, args, kwargs)

        return call

    def _start(self, label: str, fn: Callable[..., Any], args: tuple[Any, ...], kw: Any) -> Any:
        with self._lock:
            numbered = task_label(label, self._counts)
            fingerprint = task_fingerprint(numbered)
            recorded = self._replayer.match("task", fingerprint)
        if inspect.iscoroutinefunction(fn):
            return self._async_task(numbered, fingerprint, recorded, fn, args, kw)
        if recorded is not None:
            return self._loop.call(self._answer(numbered, fingerprint, recorded))
        self._ensure_live()
        started = time.perf_counter()
        try:
            result = fn(*args, **kw)
        except Exception as exc:
            self._loop.call(self._record_error(numbered, exc, started))
            raise
        if inspect.isawaitable(result):
            raise InvalidInput(f"task {numbered!r} returned an awaitable: pass an async def")
        raw = encode_result(result)
        self._loop.call(self._record(numbered, fingerprint, raw, started))
        return result

    async def _async_task(
        self,
        numbered: str,
        fingerprint: str,
        recorded: Recorded | None,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kw: Any,
    ) -> Any:
        if recorded is not None:
            return await self._loop.acall(self._answer(numbered, fingerprint, recorded))
        self._ensure_live()
        started = time.perf_counter()
        try:
            result = await fn(*args, **kw)
        except Exception as exc:
            await self._loop.acall(self._record_error(numbered, exc, started))
            raise
        raw = encode_result(result)
        await self._loop.acall(self._record(numbered, fingerprint, raw, started))
        return result

    def _ensure_live(self) -> None:
        self._check_cancelled()
        if self._state.is_terminal:
            raise Conflict(f"run {self.id} is {self._state.status}; it runs no new tasks")

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
        return result

    async def _record(self, label: str, fingerprint: str, raw: bytes, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self._state = await self._backend.record_task(self._state, label, fingerprint, raw, elapsed)

    async def _record_error(self, label: str, error: BaseException, started: float) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self._state = await self._backend.record_task_error(self._state, label, error, elapsed)

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

    def complete(self, output: Any = None) -> None:
        """Record the run's result. Completing a run that already completed does nothing."""
        if self._state.status == "completed":
            return
        self._check_cancelled()
        raw = encode_result(output)
        self._state = self._loop.call(self._backend.complete(self._state, raw))
        self.stop_heartbeat()

    def fail(self, error: BaseException | str, code: str = "agent_error") -> None:
        """Record that the run failed with ``error``."""
        if self._state.is_terminal or self._cancelled:
            self.stop_heartbeat()
            return
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._state = self._loop.call(self._backend.fail(self._state, code, message))
        self.stop_heartbeat()

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


def _raise_in(thread_id: int, error: type[BaseException]) -> None:
    """Raise ``error`` in the thread ``thread_id`` at its next Python instruction: how the
    heartbeat thread tells user code, wherever it is, that its run was cancelled."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(error))
