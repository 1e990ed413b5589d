"""The run log, `<run_dir>/metrics.jsonl`: every engine event, one JSON object per line.

Format (UTF-8, one object per line, each line flushed as it is written; a resumed run appends):

    {"event": "<kind>", "step": <env steps>, "time": <unix seconds>, ...fields of the event}

Kinds and their fields (see `rltui.events`):

    run_started  name, algo, env_id, device, total_steps, run_dir, resumed   (first line of each session)
    state        state ("starting" | "running" | "paused" | "evaluating" | "finished" | "failed"), message
    episode      episode_return (true environment return), episode_length
    update       updates (number of updates averaged), metrics {name: float}
                 e.g. "loss/q", "kl/nonparametric", "dual/temperature", "policy/kl", "perf/steps_per_s",
                 "perf/updates_per_s", "train/skipped_updates", "env/steps"
    eval         return_mean, return_std, length_mean, episodes, returns [floats], deterministic
    checkpoint   path
    warning      message
    error        message, traceback

Non-finite floats (NaN, ±inf) are written as `null` so every line is strict JSON. A reader should
skip a last line without a trailing newline (the writer may be in the middle of it, or was killed).
Example:

    {"event": "episode", "step": 1200, "time": 1767000000.5, "episode_return": -1234.5, "episode_length": 200}
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

from rltui.events import Event

LOG_NAME = "metrics.jsonl"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def event_to_line(event: Event) -> str:
    return json.dumps(_finite(event.to_json()), allow_nan=False, separators=(",", ":")) + "\n"


class RunLogWriter:
    """Subscriber that appends each event to the log as one line and flushes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._handle = open(self.path, "a", encoding="utf-8")
        if self._handle.tell() > 0 and not _ends_with_newline(self.path):
            self._handle.write("\n")  # a killed writer left half a line; keep it on its own line

    def __call__(self, event: Event) -> None:
        line = event_to_line(event)
        with self._lock:
            if self._handle.closed:
                return
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def read_events(path: Path, offset: int = 0) -> tuple[list[Event], int]:
    """Events of complete lines from byte `offset`, and the offset after the last complete line.

    Call again with the returned offset to follow a growing log. Lines that are not valid events (a
    line cut short by a killed writer) are skipped.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    events: list[Event] = []
    for raw in data[:end].splitlines():
        if not raw.strip():
            continue
        try:
            payload = json.loads(raw)
            events.append(Event.from_json(payload))
        except (ValueError, TypeError, AttributeError):
            continue
    return events, offset + end
