"""Record and replay (DESIGN §5): fingerprints of calls and the cursor that answers re-executed
calls from a recording until the code stops matching it. Pure: no I/O, no clock."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

from papayya.domain import events as ev
from papayya.errors import InvalidInput

CallKind: TypeAlias = Literal["llm", "tool", "task"]
CALL_KINDS: Final = frozenset(("llm", "tool", "task"))
# Request keys that change how a response is delivered, not what it is: a streamed call
# replays a recorded non-streamed one and the other way round.
LLM_TRANSPORT_KEYS: Final = frozenset(("stream", "stream_options"))
MAX_LABEL_LENGTH: Final = 200
_REPEAT_SUFFIX = re.compile(r"#\d+$")
_canonical = msgspec.json.Encoder(order="sorted")


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """One recorded call: what a re-execution gets instead of calling again."""

    step_number: int
    kind: CallKind
    fingerprint: str
    result: Any = None
    result_ref: str | None = None
    error: str | None = None


def fingerprint(kind: CallKind, payload: Any) -> str:
    """Hex SHA-256 of the canonical JSON (sorted keys, no whitespace) of ``[kind, payload]``."""
    if kind not in CALL_KINDS:
        raise InvalidInput(f"kind must be one of {sorted(CALL_KINDS)}, not {kind!r}")
    try:
        raw = _canonical.encode([kind, payload])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"the {kind} payload is not JSON-serialisable: {exc}") from None
    return hashlib.sha256(raw).hexdigest()


def llm_fingerprint(request: Mapping[str, Any]) -> str:
    """The fingerprint of a model request body, ignoring ``LLM_TRANSPORT_KEYS``."""
    if not isinstance(request, Mapping):
        raise InvalidInput("an LLM request must be a JSON object")
    return fingerprint("llm", {k: v for k, v in request.items() if k not in LLM_TRANSPORT_KEYS})


def tool_fingerprint(tool: str, arguments: Any) -> str:
    """The fingerprint of a tool call: its name and arguments."""
    if not isinstance(tool, str) or not tool:
        raise InvalidInput("tool must be a non-empty string")
    return fingerprint("tool", {"tool": tool, "arguments": arguments})


def task_fingerprint(label: str) -> str:
    """The fingerprint of a task, from its label as ``task_label`` numbered it."""
    if not isinstance(label, str) or not label:
        raise InvalidInput("label must be a non-empty string")
    return fingerprint("task", label)


def task_label(label: str, seen_counts: MutableMapping[str, int]) -> str:
    """``label`` the first time, then ``label#2``, ``label#3``…; counts in ``seen_counts``.

    A label may not itself end in ``#<digits>``: ``a#2`` would then be ambiguous.
    """
    if not isinstance(label, str) or not label.strip():
        raise InvalidInput("a task label must be a non-empty string")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidInput(f"a task label is at most {MAX_LABEL_LENGTH} characters")
    if _REPEAT_SUFFIX.search(label):
        raise InvalidInput(f"a task label may not end in '#<number>': {label!r}")
    if not isinstance(seen_counts, MutableMapping):
        raise InvalidInput("seen_counts must be a mutable mapping")
    seen = seen_counts.get(label, 0) + 1
    seen_counts[label] = seen
    return label if seen == 1 else f"{label}#{seen}"


def recorded_calls(
    events: Iterable[ev.RunEvent], kinds: frozenset[str] = CALL_KINDS
) -> list[Recorded]:
    """The calls a run recorded, in order, from its steps that completed.

    A step cut short (failed, or in flight at a crash) is not trusted as a recording: its
    calls run again. Tool calls that ran after their step completed still count. ``kinds``
    picks the calls one matcher answers: the SDK answers tasks, the meter model calls, each
    in its own sequence.
    """
    if isinstance(events, str | bytes | dict) or not isinstance(events, Iterable):
        raise InvalidInput("events must be an iterable of run events")
    events = list(events)
    done = {e.step_number for e in events if isinstance(e, ev.StepCompleted)}
    calls = (_as_recorded(e) for e in events)
    return [
        call
        for call in calls
        if call is not None and call.step_number in done and call.kind in kinds
    ]


def _as_recorded(event: ev.RunEvent) -> Recorded | None:
    if isinstance(event, ev.LlmCallRecorded):
        return Recorded(
            step_number=event.step_number,
            kind="llm",
            fingerprint=event.fingerprint,
            result_ref=event.response_ref,
            error=event.error,
        )
    if isinstance(event, ev.ToolCallRecorded):
        return Recorded(
            step_number=event.step_number,
            kind="tool",
            fingerprint=event.fingerprint,
            result=event.output,
            result_ref=event.output_ref,
            error=event.error,
        )
    if isinstance(event, ev.CheckpointSaved):
        return Recorded(
            step_number=event.step_number,
            kind="task",
            fingerprint=event.fingerprint,
            result=event.result,
            result_ref=event.result_ref,
        )
    if not isinstance(event, ev.RunEvent):
        raise InvalidInput(f"expected a run event, got {type(event).__name__}")
    return None


class Replayer:
    """Answers re-executed calls, one by one, from a recording.

    While each call has the kind and fingerprint of the next recorded call (of a step before
    ``until_step``, if given), ``match`` returns that recording. The first call that differs
    sets ``diverged_at_step`` (the step of the recorded call it failed to match); from then on,
    and once the recording or ``until_step`` is reached, every call is live (``None``).
    Running out of recording is not a divergence: that is where a resume goes live.
    """

    __slots__ = ("_position", "_recorded", "diverged_at_step", "live")

    def __init__(self, recorded: Sequence[Recorded], until_step: int | None = None) -> None:
        self._recorded = _validated(recorded)
        if until_step is not None:
            if isinstance(until_step, bool) or not isinstance(until_step, int) or until_step < 0:
                raise InvalidInput("until_step must be an integer >= 0 or None")
            self._recorded = [r for r in self._recorded if r.step_number < until_step]
        self._position = 0
        self.diverged_at_step: int | None = None
        self.live = not self._recorded

    @property
    def matched(self) -> int:
        """How many calls were answered from the recording."""
        return self._position

    @property
    def expected(self) -> Recorded | None:
        """The recorded call the next call must match, or ``None`` once live."""
        return None if self.live else self._recorded[self._position]

    def match(self, kind: CallKind, fingerprint: str) -> Recorded | None:
        """The recording that answers this call, or ``None`` if it must run live."""
        if kind not in CALL_KINDS:
            raise InvalidInput(f"kind must be one of {sorted(CALL_KINDS)}, not {kind!r}")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise InvalidInput("fingerprint must be a non-empty string")
        expected = self.expected
        if expected is None:
            return None
        if expected.kind != kind or expected.fingerprint != fingerprint:
            self.diverged_at_step = expected.step_number
            self.live = True
            return None
        self._position += 1
        self.live = self._position == len(self._recorded)
        return expected


def _validated(recorded: Sequence[Recorded]) -> list[Recorded]:
    if isinstance(recorded, str | bytes) or not isinstance(recorded, Sequence):
        raise InvalidInput("recorded must be a sequence of Recorded calls")
    previous = -1
    for call in recorded:
        if not isinstance(call, Recorded):
            raise InvalidInput(f"expected a Recorded call, got {type(call).__name__}")
        if call.step_number < previous:
            raise InvalidInput("recorded calls must be in step order")
        previous = call.step_number
    return list(recorded)
