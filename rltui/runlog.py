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


def parse_event_line(raw: bytes) -> Event:
    """One line of the log (bytes, without its newline) -> its Event.

    Raises ValueError saying what is wrong (`UnknownEventKind`, a ValueError, for a kind this
    version does not know): not UTF-8, not JSON, JSON nested too deeply, or fields of the wrong
    type (see `Event.from_json`). Never anything else, whatever the bytes.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (bad byte at column {exc.start + 1})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("not usable JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ValueError(f"not usable JSON ({' '.join(str(exc).split())[:80]})") from None
    return Event.from_json(payload)


def read_events(
    path: Path, offset: int = 0, errors: list[tuple[int, str]] | None = None
) -> tuple[list[Event], int]:
    """Events of complete lines from byte `offset`, and the offset after the last complete line.

    Call again with the returned offset to follow a growing log. Lines that are not valid events (a
    line cut short by a killed writer, garbage, fields of the wrong type) are skipped; with `errors`
    given, (byte offset of the line, reason) is appended to it for each.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    events: list[Event] = []
    position = offset
    for raw in data[:end].split(b"\n"):
        start, position = position, position + len(raw) + 1
        if not raw.strip():
            continue
        try:
            events.append(parse_event_line(raw))
        except ValueError as exc:
            if errors is not None:
                errors.append((start, str(exc)))
    return events, offset + end
