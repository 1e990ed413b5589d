"""Follow a run's metrics.jsonl while it grows (for `rltui watch`). No Textual import.

`MetricsFollower.poll()` returns the events appended since the previous call. A last line
without its newline is kept until the writer finishes it; lines that are not valid events
are counted in `bad_lines` and skipped. A file that shrinks (rewritten) is read again from
the start.
"""

from __future__ import annotations

import json
from pathlib import Path

from rltui.events import Event

METRICS_FILE = "metrics.jsonl"


class MetricsFollower:
    def __init__(self, path: Path, chunk_bytes: int = 4 << 20) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.offset = 0
        self.bad_lines = 0
        self._partial = b""

    def poll(self) -> list[Event]:
        """Events appended since the last call (at most about `chunk_bytes` of file per call)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # truncated or replaced: start over
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(self.chunk_bytes)
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                events.append(Event.from_json(json.loads(line)))
            except (ValueError, TypeError):
                self.bad_lines += 1
        return events

    @property
    def caught_up(self) -> bool:
        try:
            return self.path.stat().st_size == self.offset
        except FileNotFoundError:
            return True
