"""Typed controls of a live run, their replies, and their JSON form (the control socket's requests).

A command is submitted with `engine.submit(command)`, from any thread; it returns at once with a
`concurrent.futures.Future` that the engine resolves with a `Reply` once the command has taken
effect (the run is paused, the checkpoint is written, the evaluation is done, ...) or was refused
(the run has ended). Commands never block the training thread's caller, and the training thread
never waits for whoever submitted them.

JSON form, one object per request: `{"command": "pause"}`, `{"command": "evaluate", "episodes": 5}`,
`{"command": "eval_mode", "on": true}`, `{"command": "stop", "final_checkpoint": true}`;
`command_from_json` checks every field and raises `CommandError` with a one-line reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

MAX_EVAL_EPISODES = 10_000  # the [eval] episodes cap of presets


class CommandError(ValueError):
    """A request that is not a valid command; str() is a one-line reason."""


@dataclass(frozen=True)
class Command:
    """Base of all commands. `name` is the command's JSON name."""

    name: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"command": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Pause(Command):
    """Stop training between two steps (evaluations and checkpoints still run)."""

    name: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Command):
    """Train again after a pause."""

    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Checkpoint(Command):
    """Write a checkpoint now; the reply carries its path."""

    name: ClassVar[str] = "checkpoint"


@dataclass(frozen=True)
class Evaluate(Command):
    """Run `episodes` deterministic evaluation episodes (the preset's number when None)."""

    name: ClassVar[str] = "evaluate"
    episodes: int | None = None


@dataclass(frozen=True)
class SetEvalMode(Command):
    """Evaluation mode on (training pauses; deterministic episodes stream) or off."""

    name: ClassVar[str] = "eval_mode"
    on: bool = True


@dataclass(frozen=True)
class Stop(Command):
    """End the run, with a final checkpoint unless `final_checkpoint` is false."""

    name: ClassVar[str] = "stop"
    final_checkpoint: bool = True


COMMANDS: dict[str, type[Command]] = {cls.name: cls for cls in (Pause, Resume, Checkpoint, Evaluate, SetEvalMode, Stop)}


@dataclass(frozen=True)
class Reply:
    """The outcome of a command: `ok`, a one-line `message`, and any `data` (e.g. a checkpoint path)."""

    ok: bool
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, **({"data": self.data} if self.data else {})}


def command_from_json(payload: Any) -> Command:
    """The command a JSON request names, every field checked. Raises CommandError."""
    if not isinstance(payload, dict):
        raise CommandError(f"expected a JSON object, got {type(payload).__name__}")
    name = payload.get("command")
    cls = COMMANDS.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(COMMANDS))
        raise CommandError(f"unknown command {str(name)[:40]!r} (expected one of {known}, or status)")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = sorted(set(payload) - set(fields) - {"command", "id", "timeout"})
    if extra:
        raise CommandError(f"{name}: unknown field {extra[0][:40]!r}")
    values = {key: payload[key] for key in fields if key in payload}
    if cls is Evaluate and "episodes" in values:
        episodes = values["episodes"]
        valid = episodes is None or (
            isinstance(episodes, int) and not isinstance(episodes, bool) and 1 <= episodes <= MAX_EVAL_EPISODES
        )
        if not valid:
            raise CommandError(f"evaluate: episodes must be an integer in [1, {MAX_EVAL_EPISODES}] or null")
    for key in ("on", "final_checkpoint"):
        if key in values and not isinstance(values[key], bool):
            raise CommandError(f"{name}: {key} must be true or false")
    return cls(**values)
