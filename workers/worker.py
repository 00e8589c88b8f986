"""The worker: claims queued runs from Redis, runs each attempt in a runtime, records how it
ended (DESIGN §8).

Claiming is an append of ``RunStarted`` at the run's expected version, so two workers that
got the same message (a duplicate, a reclaimed delivery) cannot both start it, and a message
of a run that is no longer queued is dropped. The worker holds a lease on each attempt it
runs, renewed every heartbeat; the sweeper recovers runs whose lease expired.

The worker relays what happens to a run while its agent runs: a cancellation request stops
the agent (killed after the grace period) and ends the run as ``cancelled``; a run that ended
without the agent (its budget ran out at the gateway, say) has its agent stopped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from eventstore.postgres import PostgresEventStore
from eventstore.types import Filters
from papayya import runtokens
from papayya.commands.settle import end_attempt
from papayya.domain import events as ev
from papayya.domain.handover import SETTLE_WAIT_SECONDS
from papayya.domain.state import RunState
from papayya.domain.timelimit import HEARTBEAT_LOST, TIMEOUT
from papayya.errors import ConcurrencyError, IllegalTransition, RunNotFound
from papayya.processruntime import ProcessRuntimePolicy
from papayya.readmodels.deployments import Deployments
from papayya.readmodels.heartbeats import Heartbeats
from papayya.readmodels.leases import Leases
from papayya.runs import run_stream
from papayya.runstates import RunStates
from papayya.runtime.main import EXIT_USAGE  # could not load the agent: retrying is futile
from workers.agentloop import builtin_deployment, requested_loop
from workers.queue import RunQueue
from workers.runtime import AgentHandle, Deployment, Launch, Limits, Runtime
from workers.timelimits import HEARTBEATING, HeartbeatWatch, arm_deadline, stopped_outcome

log = logging.getLogger(__name__)

# A project's secrets, opened, by project id (papayya.readmodels.projectsecrets).
ProjectSecretsSource = Callable[[str], Awaitable[Mapping[str, str]]]

OUTPUT_TAIL: Final = 4000
OUTPUT_EVENT_CHARS: Final = 64_000  # per attempt: a run keeps at most max_attempts times this
OUTPUT_EVENT_LINES: Final = 200  # per attempt, as many as a runtime keeps (OUTPUT_LINES)
# How often a running attempt's new output is recorded (PAPAYYA_OUTPUT_FLUSH_SECONDS).
OUTPUT_FLUSH_SECONDS: Final = 2.0
OUTPUT_FLUSH_RANGE: Final = (0.1, 60.0)
REDACTED: Final = "[redacted]"
SHORTEST_REDACTED: Final = 4
REAP_SECONDS: Final = 30.0  # how often leftover containers of finished attempts are removed
# How often a lost attempt looks again whether its calls in flight at the gateway have settled.
SETTLE_POLL_SECONDS: Final = 0.2
# Events after which an attempt's agent must stop.
STOPPING: Final = frozenset(
    ("CancelRequested", "RunCompleted", "RunFailed", "RunCancelled", "BudgetExceeded",
     "AttemptLost")
)  # fmt: skip


@dataclass(frozen=True)
class OutputLog:
    """How much of an attempt's output is recorded: ``AgentOutput`` events with the lines
    read since the last one while the attempt runs (``live``), then the rest as it ends
    (``final``), within ``OUTPUT_EVENT_CHARS`` and ``OUTPUT_EVENT_LINES`` over all of them.
    Live events spend at most half of that (the attempt's first lines, shown while it runs);
    the final one keeps the last lines in what is left, so a crash's traceback is there.
    Lines that did not fit are marked ``truncated``. Each event's lines are redacted."""

    attempt: int
    seen: int = 0  # lines of the handle dealt with: recorded or dropped
    chars: int = 0  # characters recorded, a line break counted for each line
    lines: int = 0  # lines recorded

    def live(
        self, count: int, kept: list[tuple[float, str]], secrets: Iterable[str] = ()
    ) -> tuple[ev.AgentOutput, OutputLog] | None:
        """The event with the lines read since the last one, and what is recorded after it;
        ``None`` if none is new or the live share of the bound is spent. ``count``: lines
        read so far in all, of which ``kept`` are the last."""
        fresh, lost = self._new(count, kept)
        chars = OUTPUT_EVENT_CHARS // 2 - self.chars
        room = OUTPUT_EVENT_LINES // 2 - self.lines
        taken: list[tuple[float, str]] = []
        for at, text in redacted(fresh, secrets):
            if len(taken) >= room or len(text) + 1 > chars:
                break
            chars -= len(text) + 1
            taken.append((at, text))
        if not taken:
            return None
        size = sum(len(text) + 1 for _, text in taken)
        event = ev.AgentOutput(
            attempt=self.attempt, lines=tuple(taken), truncated=lost > 0, final=False
        )
        after = OutputLog(
            self.attempt, self.seen + lost + len(taken), self.chars + size, self.lines + len(taken)
        )
        return event, after

    def final(
        self, count: int, kept: list[tuple[float, str]], secrets: Iterable[str] = ()
    ) -> ev.AgentOutput:
        """The attempt's last event: the last of the lines not recorded yet that fit.
        Written even when empty, so that a reader following the run knows the attempt's
        output is all there (``papayya runs logs -f``)."""
        fresh, lost = self._new(count, kept)
        chars = OUTPUT_EVENT_CHARS - self.chars
        room = OUTPUT_EVENT_LINES - self.lines
        taken: list[tuple[float, str]] = []
        for at, text in reversed(redacted(fresh, secrets)):
            if len(taken) >= room or len(text) + 1 > chars:
                break
            chars -= len(text) + 1
            taken.append((at, text))
        taken.reverse()
        cut = lost > 0 or len(taken) < len(fresh)
        return ev.AgentOutput(attempt=self.attempt, lines=tuple(taken), truncated=cut)

    def _new(
        self, count: int, kept: list[tuple[float, str]]
    ) -> tuple[list[tuple[float, str]], int]:
        """The kept lines not seen yet, and how many unseen ones the runtime dropped."""
        new = max(count - self.seen, 0)
        fresh = kept[len(kept) - min(new, len(kept)) :]
        return fresh, new - len(fresh)


def agent_output(attempt: int, lines: list[tuple[float, str]]) -> list[ev.RunEvent]:
    """An attempt's whole output as its one (final) event: its last lines that fit."""
    return [OutputLog(attempt).final(len(lines), lines)]


def redacted(lines: list[tuple[float, str]], secrets: Iterable[str]) -> list[tuple[float, str]]:
    """``lines`` with each secret value (of at least ``SHORTEST_REDACTED`` characters: a
    shorter one would blank out ordinary text) replaced by ``REDACTED``."""
    hidden = sorted({s for s in secrets if len(s) >= SHORTEST_REDACTED}, key=len, reverse=True)
    if not hidden:
        return lines
    shown = []
    for at, text in lines:
        for secret in hidden:
            text = text.replace(secret, REDACTED)
        shown.append((at, text))
    return shown


def runtime_available(runtime: Runtime) -> bool:
    """Docker is worth asking only where an engine is configured or its socket exists."""
    if runtime.name != "docker":
        return True
    return bool(os.environ.get("DOCKER_HOST")) or Path("/var/run/docker.sock").exists()


@dataclass(frozen=True)
class WorkerConfig:
    control_url: str = "http://127.0.0.1:8080"
    control_socket: Path | None = None
    concurrency: int = 4
    heartbeat_seconds: float = 15.0
    lease_seconds: float = 60.0
    grace_seconds: float = 10.0
    drain_seconds: float = 30.0
    max_attempts: int = 3
    settle_wait_seconds: float = SETTLE_WAIT_SECONDS
    # An agent silent this long is frozen or cut off (workers.timelimits); None: the lease.
    heartbeat_timeout_seconds: float | None = None
    # How often a running attempt's new output is recorded (``OutputLog``).
    output_flush_seconds: float = OUTPUT_FLUSH_SECONDS
    burst: bool = False
    block_ms: int = 1000
    limits: Limits = field(default_factory=Limits)
    # Whose process deployments this worker runs (PAPAYYA_PROCESS_RUNTIME): checked again at
    # each claim, so a setting narrowed after a registration leaves no door open.
    process_runtime: ProcessRuntimePolicy = field(default_factory=ProcessRuntimePolicy)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> WorkerConfig:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name, key, kind in (
            ("heartbeat_seconds", "PAPAYYA_HEARTBEAT_SECONDS", float),
            ("lease_seconds", "PAPAYYA_LEASE_SECONDS", float),
            ("grace_seconds", "PAPAYYA_GRACE_SECONDS", float),
            ("drain_seconds", "PAPAYYA_DRAIN_SECONDS", float),
            ("max_attempts", "PAPAYYA_MAX_ATTEMPTS", int),
            ("settle_wait_seconds", "PAPAYYA_SETTLE_WAIT_SECONDS", float),
            ("heartbeat_timeout_seconds", "PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS", float),
            ("output_flush_seconds", "PAPAYYA_OUTPUT_FLUSH_SECONDS", float),
        ):
            if env.get(key):
                try:
                    value = kind(env[key])
                except ValueError:
                    raise ValueError(f"{key} must be a number, not {env[key]!r}") from None
                if not (value >= 0 if name == "drain_seconds" else value > 0) or value != value:
                    raise ValueError(f"{key} must be a positive number, not {env[key]!r}")
                values[name] = value
        values["process_runtime"] = ProcessRuntimePolicy.parse(env.get("PAPAYYA_PROCESS_RUNTIME"))
        if env.get("PAPAYYA_CONTROL_URL"):
            values["control_url"] = env["PAPAYYA_CONTROL_URL"]
        if env.get("PAPAYYA_RUNTIME_SOCKET"):
            values["control_socket"] = Path(env["PAPAYYA_RUNTIME_SOCKET"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)  # type: ignore[arg-type]
        low, high = OUTPUT_FLUSH_RANGE
        if not low <= config.output_flush_seconds <= high:
            raise ValueError(f"PAPAYYA_OUTPUT_FLUSH_SECONDS must be between {low} and {high}")
        if config.lease_seconds <= config.heartbeat_seconds:
            raise ValueError("the lease must be longer than the heartbeat interval")
        if config.agent_silence_seconds <= config.heartbeat_seconds:
            raise ValueError(
                "PAPAYYA_HEARTBEAT_TIMEOUT_SECONDS must be longer than the heartbeat interval"
            )
        return config

    @property
    def agent_silence_seconds(self) -> float:
        """How long an agent may send no heartbeat before it counts as frozen or gone."""
        return self.heartbeat_timeout_seconds or self.lease_seconds


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Attempt:
    run_id: str
    attempt: int
    handle: AgentHandle | None = None
    output: OutputLog | None = None  # what of the agent's output is recorded so far
    # cancel, ended, lease_lost, shutdown, timeout, heartbeat_lost
    stop_reason: str | None = None
    stopping: asyncio.Task[None] | None = None
    silent_for: float = 0.0  # how long its agent had been silent when it was stopped


class Worker:
    def __init__(
        self,
        store: PostgresEventStore,
        queue: RunQueue,
        runtimes: Mapping[str, Runtime],
        secret: bytes,
        config: WorkerConfig,
        name: str | None = None,
        project_secrets: ProjectSecretsSource | None = None,
    ) -> None:
        self.store = store
        self.project_secrets = project_secrets
        # The runs this worker claims and relays, folded once: the claim's append, each
        # stopping event and the outcome only read what is newer than the state kept here.
        self.runs = RunStates(store)
        self.leases = Leases(store)
        self.heartbeats = Heartbeats(store)
        self.deployments = Deployments(store)
        self.queue = queue
        self.runtimes = runtimes
        self.secret = secret
        self.config = config
        self.name = name or worker_name()
        self._active: dict[str, Attempt] = {}
        self._deployments: dict[tuple[str, int | None], Deployment] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._beats = HeartbeatWatch(config.agent_silence_seconds)
        self.run_finished = asyncio.Event()  # run() returned (burst mode: the queue is empty)

    @property
    def active(self) -> int:
        return len(self._active)

    def stop(self) -> None:
        """Drain: take no more runs, let the running ones finish (``drain_seconds``), then
        stop their agents and hand the runs back to the queue."""
        self._stopping.set()

    async def run(self) -> None:
        helpers = [
            asyncio.create_task(self._heartbeats(), name="worker-heartbeats"),
            asyncio.create_task(self._relay(), name="worker-relay"),
        ]
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            self.run_finished.set()
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _claim_loop(self) -> None:
        idle = 0
        reclaim_every = max(1.0, self.config.heartbeat_seconds)
        last_reclaim = 0.0
        grouped = False
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            free = self.config.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(self._tasks, timeout=1, return_when=asyncio.FIRST_COMPLETED)
                continue
            messages: list[tuple[str, str]] = []
            try:
                if not grouped:
                    await self.queue.ensure_group()
                    grouped = True
                if loop.time() - last_reclaim >= reclaim_every:
                    last_reclaim = loop.time()
                    idle_ms = int(self.config.lease_seconds * 1000)
                    messages = await self.queue.reclaim(self.name, idle_ms, free)
                if not messages:
                    messages = await self.queue.read(self.name, free, self.config.block_ms)
            except Exception as exc:  # Redis away: keep the running attempts, retry
                log.warning("worker %s: queue read failed: %s", self.name, exc)
                await self._pause(1.0)
                continue
            if not messages:
                idle += 1
                if self.config.burst and not self._tasks and idle >= 2:
                    return
                continue
            idle = 0
            for message_id, run_id in messages:
                task = asyncio.create_task(self._process(message_id, run_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.config.drain_seconds)
        for attempt in list(self._active.values()):
            self._stop(attempt, "shutdown")
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.config.grace_seconds + 5)

    # -- one run ------------------------------------------------------------------------

    async def _process(self, message_id: str, run_id: str) -> None:
        try:
            claimed = await self._claim(run_id)
            await self.queue.ack(message_id, run_id)
            if claimed is not None:
                await self._execute(*claimed)
        except Exception:
            log.exception("worker %s: run %s failed in the worker", self.name, run_id)

    async def _claim(self, run_id: str) -> tuple[RunState, Deployment] | None:
        """Start the run's next attempt, or ``None`` if it is not ours to start."""
        for _ in range(5):
            try:
                state = await self.runs.load(run_id)
            except RunNotFound:
                return None
            if state.status != "queued":
                return None
            # The built-in loop when the run asks for it; else the agent's deployment; else,
            # for an agent of configuration alone, the built-in loop (issue 17).
            deployment = (
                await requested_loop(self.store, state)
                or await self._deployment(state)
                or await builtin_deployment(self.store, state)
            )
            if deployment is None:
                await self._fail_undeployed(state)
                return None
            policy = self.config.process_runtime
            if deployment.runtime == "process" and not policy.allows(deployment.project_id):
                await self._fail_refused(state, policy.refusal(deployment.project_id))
                return None
            attempt = state.attempt + 1
            lease = (run_id, attempt, self.name, self.config.lease_seconds)
            await self.leases.take(*lease)
            try:
                started = await self.runs.append(
                    state, [ev.RunStarted(attempt=attempt, worker=self.name)]
                )
            except (ConcurrencyError, IllegalTransition):
                await self._release_claim(run_id, attempt)
                continue
            await self.leases.hold(*lease)
            return started, deployment
        return None

    async def _release_claim(self, run_id: str, attempt: int) -> None:
        """After a lost claim: give back the lease taken for ``attempt`` unless another claim
        (another worker, or a duplicate message in this one) started that attempt, whose
        lease it is now."""
        with contextlib.suppress(RunNotFound):
            if (await self.runs.load(run_id)).attempt >= attempt:
                return
        await self.leases.release_claim(run_id, attempt, self.name)

    async def _deployment(self, state: RunState) -> Deployment | None:
        version = state.deployment_version
        number = int(version) if version is not None and version.isdigit() else None
        key = (state.agent_id, number)
        found = self._deployments.get(key) if number is not None else None
        if found is None:
            ready = await self.deployments.ready(*key)
            if ready is None:
                return None
            found = Deployment.from_row(ready)
            if number is not None:  # a ready version never changes: keep it
                self._deployments[key] = found
        return found

    async def _fail_undeployed(self, state: RunState) -> None:
        message = (
            f"agent {state.agent_id} has no ready deployment"
            + (f" at version {state.deployment_version}" if state.deployment_version else "")
            + ": register one (papayya agents register) or deploy (papayya deploy)"
        )
        with contextlib.suppress(ConcurrencyError, IllegalTransition):
            await self.runs.append(state, [ev.RunFailed(code="no_deployment", message=message)])

    async def _fail_refused(self, state: RunState, message: str) -> None:
        log.warning("run %s: refused: %s", state.run_id, message)
        with contextlib.suppress(ConcurrencyError, IllegalTransition):
            await self.runs.append(
                state, [ev.RunFailed(code="process_runtime_not_allowed", message=message)]
            )

    async def _execute(self, state: RunState, deployment: Deployment) -> None:
        current = Attempt(state.run_id, state.attempt)
        self._active[state.run_id] = current
        timer = arm_deadline(state, lambda: self._time_up(current))
        code: int | None = None
        output = ""
        lines: list[tuple[float, str]] = []
        logged = OutputLog(state.attempt).final(0, [])
        recorded = False
        try:
            runtime = self.runtimes.get(deployment.runtime)
            if runtime is None:
                output = f"this worker has no {deployment.runtime} runtime"
            elif current.stop_reason == TIMEOUT:  # out of time before this attempt began
                pass
            else:
                launch = Launch(
                    run_id=state.run_id,
                    attempt=state.attempt,
                    deployment=deployment,
                    token=runtokens.mint(self.secret, state.run_id, state.attempt),
                    control_url=self.config.control_url,
                    control_socket=self.config.control_socket,
                    heartbeat_seconds=self.config.heartbeat_seconds,
                    grace_seconds=self.config.grace_seconds,
                    limits=self.config.limits,
                )
                log.info("run %s: starting attempt %s", state.run_id, state.attempt)
                try:
                    if self.project_secrets is not None:  # opened per attempt: never kept
                        found = await self.project_secrets(deployment.project_id)
                        launch = dataclasses.replace(launch, secrets=found)
                    current.handle = await runtime.start(launch)
                    if deployment.runtime in HEARTBEATING:
                        self._beats.started(state.run_id, state.attempt)
                    log.info("run %s: started attempt %s", state.run_id, state.attempt)
                except Exception as exc:
                    log.warning("run %s: the runtime did not start: %s", state.run_id, exc)
                    output = f"the {runtime.name} runtime did not start: {exc}"
                if current.handle is not None:
                    if current.stop_reason is not None:  # asked to stop while starting
                        self._stop(current, current.stop_reason)
                    # The project's secrets are in the agent's environment: kept out of the
                    # run's events, whatever the agent printed.
                    secrets = tuple(launch.secrets.values())
                    exited = asyncio.Event()
                    flusher = asyncio.create_task(self._flush_output(current, secrets, exited))
                    try:
                        code = await current.handle.wait()
                    finally:
                        exited.set()
                        await flusher  # no flush once the last output is being recorded
                    log.info("run %s: attempt %s exited %s", state.run_id, state.attempt, code)
                    if current.stopping is not None:
                        await current.stopping
                    count, kept = current.handle.counted()
                    every = current.handle.lines()  # the kept lines and a partial last one
                    lines = redacted(every, secrets)
                    output = "\n".join(text for _, text in lines)
                    recorded_so_far = current.output or OutputLog(current.attempt)
                    logged = recorded_so_far.final(count + len(every) - len(kept), every, secrets)
            await self._record(current, code, output, logged)
            recorded = True
        finally:
            if timer is not None:
                timer.cancel()
            self._beats.ended(state.run_id, state.attempt)
            self._active.pop(state.run_id, None)
            if recorded:
                await self.leases.drop(state.run_id, self.name)
            else:
                # The attempt's end is unknown here (the runtime or the store failed): the
                # lease, no longer renewed, expires and the sweeper recovers the run.
                await self._abandon(current)

    async def _abandon(self, current: Attempt) -> None:
        log.warning("run %s: attempt %s is left to the sweeper", current.run_id, current.attempt)
        if current.handle is not None:
            with contextlib.suppress(Exception):
                await current.handle.stop(self.config.grace_seconds)

    async def _flush_output(
        self, current: Attempt, secrets: tuple[str, ...], exited: asyncio.Event
    ) -> None:
        """While the agent runs: record its new output every ``output_flush_seconds``."""
        while not exited.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), self.config.output_flush_seconds)
            if exited.is_set():
                return
            try:
                await self._flush(current, secrets)
            except Exception as exc:  # a lost race or the store: the next tick tries again
                log.warning("run %s: its output was not recorded now: %s", current.run_id, exc)

    async def _flush(self, current: Attempt, secrets: tuple[str, ...]) -> None:
        """Append the agent's output read since the last flush, through the run's command
        path (so it takes turns with the run's other writers), while the attempt runs."""
        if current.handle is None:
            return
        recorded = current.output or OutputLog(current.attempt)
        count, kept = current.handle.counted()
        flush = recorded.live(count, kept, secrets)
        if flush is None:
            return
        event, after = flush
        appended = False

        def decide(state: RunState) -> list[ev.RunEvent]:
            nonlocal appended
            appended = state.status == "running" and state.attempt == current.attempt
            return [event] if appended else []

        await self.runs.execute(current.run_id, decide)
        if appended:
            current.output = after

    async def _record(
        self, current: Attempt, code: int | None, output: str, logged: ev.AgentOutput
    ) -> None:
        """Append the agent's output and how the attempt ended (unless the run already says
        so: the agent reported it, the gateway ended the run or the sweeper moved on)."""
        tail = output[-OUTPUT_TAIL:]
        max_attempts = self.config.max_attempts
        wait = self.config.settle_wait_seconds
        silence = self.config.agent_silence_seconds

        def outcome(state: RunState) -> list[ev.RunEvent]:
            if state.status != "running" or state.attempt != current.attempt:
                return []  # ended by the agent's report, the gateway or the sweeper
            if state.cancel_requested:
                return [ev.RunCancelled(reason=state.cancel_reason)]
            if current.stop_reason == "shutdown":
                return [ev.AttemptLost(attempt=current.attempt, reason="worker_shutdown",
                                       worker=self.name)]  # fmt: skip
            if current.stop_reason == "lease_lost":
                return []
            if current.stop_reason in (TIMEOUT, HEARTBEAT_LOST):
                return stopped_outcome(state, current.stop_reason, max_attempts,
                                       current.silent_for, silence, self.name)  # fmt: skip
            if code is None and current.attempt < max_attempts:
                return [ev.AttemptLost(attempt=current.attempt, reason="runtime_start_failed",
                                       worker=self.name)]  # fmt: skip
            if code is None or code in (0, EXIT_USAGE):
                why = "the agent could not be started" if code is None else (
                    "the agent exited without reporting an outcome" if code == 0
                    else "the runtime could not load the agent"
                )  # fmt: skip
                return [ev.RunFailed(code="runtime_error", message=f"{why}\n{tail}".strip())]
            if current.attempt >= max_attempts:
                message = (
                    f"attempt {current.attempt} of {max_attempts} ended with exit code {code}"
                    f"\n{tail}"
                ).strip()
                return [ev.RunFailed(code="agent_crashed", message=message)]
            return [ev.AttemptLost(attempt=current.attempt, reason=f"agent_exit_{code}",
                                   worker=self.name)]  # fmt: skip

        with contextlib.suppress(RunNotFound):
            # The attempt's calls still in flight at the gateway settle (and are recorded)
            # before the next attempt may start: it is answered from their recording.
            while not await end_attempt(self.runs, current.run_id, outcome, wait, [logged]):
                await asyncio.sleep(SETTLE_POLL_SECONDS)

    # -- relays -------------------------------------------------------------------------

    def _stop(self, current: Attempt, reason: str) -> None:
        if current.stop_reason is None or reason == "shutdown":
            current.stop_reason = reason
        if current.handle is None or current.stopping is not None:
            return
        grace = self.config.grace_seconds
        if reason == "ended":
            # The agent reported its own end (or the gateway ended the run): let it exit
            # by itself first.
            current.stopping = asyncio.create_task(self._stop_after(current.handle, grace))
        else:
            current.stopping = asyncio.create_task(current.handle.stop(grace))

    async def _stop_after(self, handle: AgentHandle, grace: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(handle.wait()), grace)
            return
        await handle.stop(grace)

    def _time_up(self, current: Attempt) -> None:
        log.warning("run %s: its time limit is up; stopping its agent", current.run_id)
        self._stop(current, TIMEOUT)

    async def _check_heartbeats(self) -> None:
        """Stop the agents whose heartbeats stopped while their process or container still
        runs (workers.timelimits)."""
        attempts = {r: a.attempt for r, a in self._active.items() if a.stop_reason is None}
        try:
            silent = await self._beats.silent(self.heartbeats, attempts)
        except Exception as exc:
            log.warning("worker %s: reading agents' heartbeats failed: %s", self.name, exc)
            return
        for run_id, silent_for in silent.items():
            current = self._active.get(run_id)
            if current is not None and current.stop_reason is None:
                log.warning("run %s: no heartbeat from its agent for %.1f s; stopping it",
                            run_id, silent_for)  # fmt: skip
                current.silent_for = silent_for
                self._stop(current, HEARTBEAT_LOST)

    async def _heartbeats(self) -> None:
        """Renew the leases; stop agents whose lease is gone or whose run was asked to stop
        (the relay's fallback when an event was missed)."""
        beats = 0
        reap_every = max(1, round(REAP_SECONDS / self.config.heartbeat_seconds))
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            if beats % reap_every == 0:
                await self._reap()
            beats += 1
            held = list(self._active)
            if not held:
                continue
            await self._check_heartbeats()
            try:
                renewed = await self.leases.renew(self.name, held, self.config.lease_seconds)
                stopping = await self.leases.stopping(held)
            except Exception as exc:
                log.warning("worker %s: lease renewal failed: %s", self.name, exc)
                continue
            for run_id in held:
                current = self._active.get(run_id)
                if current is not None and run_id not in renewed and current.handle is not None:
                    log.warning("run %s: lease lost; stopping its agent", run_id)
                    self._stop(current, "lease_lost")
            for run_id in stopping:
                current = self._active.get(run_id)
                if current is not None:
                    await self._relay_state(current)

    async def _reap(self) -> None:
        """Have runtimes that can (Docker) remove what over attempts left behind."""

        async def current(run_id: str, attempt: int) -> bool:
            found = await self.store.summary(run_stream(run_id))
            if found is None:  # not a run of this installation (they may share an engine)
                return True
            summary = found[1]
            return bool(summary.get("status") == "running" and summary.get("attempt") == attempt)

        for runtime in self.runtimes.values():
            reap = getattr(runtime, "reap", None)
            if reap is None or not runtime_available(runtime):
                continue
            try:
                removed = await reap(current)
            except Exception as exc:  # an engine that is away is the runs' problem, not ours
                log.debug("worker %s: reaping %s failed: %s", self.name, runtime.name, exc)
                continue
            if removed:
                log.info("worker %s: removed %d leftover %s agents", self.name, removed,
                         runtime.name)  # fmt: skip

    async def _relay(self) -> None:
        """Follow cancellations and ends of the runs this worker runs, as they commit."""
        filters = Filters.of(categories=["run"], types=sorted(STOPPING))
        while True:
            try:
                head = await self.store.head()
                async with self.store.subscribe(after=head, filters=filters) as events:
                    async for recorded in events:
                        current = self._active.get(recorded.stream_id.removeprefix("run-"))
                        if current is not None:
                            await self._relay_state(current)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("worker %s: relay restarts: %s", self.name, exc)
                await asyncio.sleep(1)

    async def _relay_state(self, current: Attempt) -> None:
        try:
            state = await self.runs.load(current.run_id)
        except RunNotFound:
            return
        if state.attempt != current.attempt or state.status in ("queued",):
            self._stop(current, "lease_lost")
        elif state.is_terminal:
            self._stop(current, "ended")
        elif state.cancel_requested:
            self._stop(current, "cancel")
