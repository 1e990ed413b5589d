"""Typed events emitted by the training engine, and their JSON form (one line of metrics.jsonl).

Every event carries `step` (env steps so far) and `time` (seconds since the epoch). Subscribers
are called on the engine's thread and must return quickly; the UI copies events into its own
store and redraws on a timer, the run log writes one JSON line per event.

JSON form: `{"event": <kind>, "step": int, "time": float, ...fields}` with the fields below.
`Event.from_json` reverses `Event.to_json` (used by `rltui watch` to replay a run's log).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class RunState(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    EVALUATING = "evaluating"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (RunState.FINISHED, RunState.FAILED)


@dataclass(frozen=True)
class Event:
    """Base of all events. `kind` names the event in JSON."""

    kind: ClassVar[str] = "event"
    step: int
    time: float = field(default_factory=time.time, kw_only=True)

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            payload[f.name] = value
        return payload

    @staticmethod
    def from_json(payload: Any) -> Event:
        """Rebuild an event from its JSON form, checking every field's type.

        Raises `UnknownEventKind` (a ValueError) for a kind this version does not know, and
        ValueError naming the field for anything else: a payload that is not an object, a missing
        field, or a value of the wrong type. Fields are checked by their declared type: `int` is
        an integer in [0, 2**63) (not a bool), `float` is a number or `null` (NaN; the log writes
        non-finite floats as `null`), `str` a string, `bool` a boolean, `state` one of RunState's
        values, `metrics` an object of numbers or nulls, `returns` an array of numbers or nulls.
        Unknown fields are ignored (a newer writer may add some).
        """
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {_json_type(payload)}")
        kind = payload.get("event")
        if not isinstance(kind, str):
            raise ValueError(f"'event' must be a string naming the kind, got {_short(kind)}")
        cls = EVENT_TYPES.get(kind)
        if cls is None:
            raise UnknownEventKind(f"unknown event kind {_short(kind)}")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in payload:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{kind} event: missing field {f.name!r}")
                continue
            convert = _FIELD_TYPES.get(str(f.type))
            if convert is None:  # a field type added without a checker: refuse rather than guess
                raise ValueError(f"{kind} event: field {f.name!r} has no JSON checker for {f.type}")
            try:
                kwargs[f.name] = convert(payload[f.name])
            except _BadField as exc:
                raise ValueError(f"{kind} event: {f.name!r} must be {exc}, got {_short(payload[f.name])}") from None
        return cls(**kwargs)


class UnknownEventKind(ValueError):
    """A metrics.jsonl line whose `event` kind this version does not know (a newer writer?)."""


class _BadField(Exception):
    """str() says what the field must be."""


MAX_INT = 2**63 - 1


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 40) -> str:
    if isinstance(value, (dict, list)):
        return _json_type(value)
    text = "null" if value is None else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT:
        return value
    raise _BadField(f"an integer in [0, {MAX_INT}]")


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond the float range
            pass
    raise _BadField("a number or null")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _BadField("a string")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _BadField("true or false")


def _to_state(value: Any) -> RunState:
    if isinstance(value, str):
        try:
            return RunState(value)
        except ValueError:
            pass
    raise _BadField("one of " + ", ".join(repr(s.value) for s in RunState))


def _to_metrics(value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        try:
            return {_to_str(k): _to_float(v) for k, v in value.items()}
        except _BadField:
            pass
    raise _BadField("an object of numbers or nulls")


SettingValue = float | int | bool | str


def _to_settings(value: Any) -> dict[str, SettingValue]:
    if isinstance(value, dict) and all(
        isinstance(k, str) and (isinstance(v, (int, float, bool, str)) or v is None) for k, v in value.items()
    ):
        return {k: math.nan if v is None else v for k, v in value.items()}
    raise _BadField("an object of numbers, booleans or strings")


def _to_floats(value: Any) -> tuple[float, ...]:
    if isinstance(value, list):
        try:
            return tuple(_to_float(v) for v in value)
        except _BadField:
            pass
    raise _BadField("an array of numbers or nulls")


# Declared field type (the annotation, a string under `from __future__ import annotations`) -> checker.
_FIELD_TYPES: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "bool": _to_bool,
    "RunState": _to_state,
    "dict[str, float]": _to_metrics,
    "tuple[float, ...]": _to_floats,
    "dict[str, SettingValue]": _to_settings,
}


@dataclass(frozen=True)
class RunStarted(Event):
    """First event of a run (and of each resumed session of it)."""

    kind: ClassVar[str] = "run_started"
    name: str
    algo: str
    env_id: str
    device: str
    total_steps: int
    run_dir: str
    resumed: bool = False
    # The [mpo]/[trpo] settings in effect (the views draw KL bounds and the like from them).
    agent_settings: dict[str, SettingValue] = field(default_factory=dict)


@dataclass(frozen=True)
class StateChanged(Event):
    kind: ClassVar[str] = "state"
    state: RunState
    message: str = ""


@dataclass(frozen=True)
class EpisodeFinished(Event):
    """A training episode ended; `episode_return` is the true (unnormalised) environment return."""

    kind: ClassVar[str] = "episode"
    episode_return: float
    episode_length: int


@dataclass(frozen=True)
class UpdateMetrics(Event):
    """Metrics of the updates since the last such event, averaged (coalesced, not one per update).

    `metrics` maps names such as "loss/q", "dual/temperature", "perf/steps_per_s" to floats.
    """

    kind: ClassVar[str] = "update"
    updates: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class EvalResult(Event):
    """Deterministic (or stochastic) evaluation episodes on separate environments.

    `source` says why they ran: "scheduled" (every `[eval] interval` steps and at the end: the
    run's evaluation curve), "requested" (an `evaluate` command) or "manual" (evaluation mode: one
    event per episode, its own record, apart from the curve).
    """

    kind: ClassVar[str] = "eval"
    return_mean: float
    return_std: float
    length_mean: float
    episodes: int
    returns: tuple[float, ...] = ()
    deterministic: bool = True
    source: str = "scheduled"


EVAL_SOURCES = ("scheduled", "requested", "manual")


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    path: str


@dataclass(frozen=True)
class BestCheckpointSaved(Event):
    """A scheduled evaluation beat every earlier one of the run: the agent it evaluated (with mean
    return `return_mean`) was saved as `path` (checkpoints/best)."""

    kind: ClassVar[str] = "best_checkpoint"
    path: str
    return_mean: float


@dataclass(frozen=True)
class WarningRaised(Event):
    """Something the user should know that did not stop training (e.g. skipped updates)."""

    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class ErrorRaised(Event):
    """An exception inside the loop; the run goes to the FAILED state right after."""

    kind: ClassVar[str] = "error"
    message: str
    traceback: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        StateChanged,
        EpisodeFinished,
        UpdateMetrics,
        EvalResult,
        CheckpointSaved,
        BestCheckpointSaved,
        WarningRaised,
        ErrorRaised,
    )
}
