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
import time
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
    def from_json(payload: dict[str, Any]) -> "Event":
        """Rebuild an event from its JSON form. Raises ValueError on an unknown kind or bad fields."""
        data = dict(payload)
        kind = data.pop("event", None)
        cls = EVENT_TYPES.get(kind)
        if cls is None:
            raise ValueError(f"unknown event kind {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "state" in kwargs:
            kwargs["state"] = RunState(kwargs["state"])
        if "returns" in kwargs:
            kwargs["returns"] = tuple(kwargs["returns"])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ValueError(f"bad {kind!r} event: {exc}") from None


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
    """Deterministic (or stochastic) evaluation episodes on separate environments."""

    kind: ClassVar[str] = "eval"
    return_mean: float
    return_std: float
    length_mean: float
    episodes: int
    returns: tuple[float, ...] = ()
    deterministic: bool = True


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    path: str


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
        WarningRaised,
        ErrorRaised,
    )
}
