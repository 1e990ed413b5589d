"""The run log, `<run_dir>/metrics.jsonl`: every engine event, one JSON object per line.

Format (UTF-8, one object per line, each line flushed as it is written; a resumed run appends):

    {"event": "<kind>", "step": <env steps>, "time": <unix seconds>, ...fields of the event}

Kinds and their fields (see `rltui.events`):

    run_started  name, algo, env_id, device, total_steps, run_dir, resumed   (first line of each session),
                 agent_settings {key: value} (the [mpo]/[trpo] values in effect; absent in older logs)
    state        state ("starting" | "running" | "paused" | "evaluating" | "finished" | "failed"), message
    episode      episode_return (true environment return), episode_length
    update       updates (number of updates averaged), metrics {name: float}
                 e.g. "loss/q", "kl/nonparametric", "dual/temperature", "policy/kl", "perf/steps_per_s",
                 "perf/updates_per_s", "train/skipped_updates", "env/steps"
    eval         return_mean, return_std, length_mean, episodes, returns [floats], deterministic,
                 source ("scheduled", "requested" or "manual": evaluation mode; absent = scheduled)
    checkpoint   path
    best_checkpoint  path (checkpoints/best), return_mean: a scheduled evaluation beat every earlier
                 one and its agent was saved (absent in older logs)
    warning      message
    error        message, traceback

Non-finite floats (NaN, ±inf) are written as `null` so every line is strict JSON. A reader should
skip a last line without a trailing newline (the writer may be in the middle of it, or was killed).
Example:

    {"event": "episode", "step": 1200, "time": 1767000000.5, "episode_return": -1234.5, "episode_length": 200}

`MetricsFollower` is the one reader of the log: every view of a run reads it through that class
(`rltui watch`, the dashboard of a resumed run, `read_events`, the tests), so all of them see the
same events, skip the same bad lines and say the same things about them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltui.events import Event, UnknownEventKind

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
    line cut short by a killed writer, garbage, fields of the wrong type, unknown kinds) are skipped;
    with `errors` given, (byte offset of the line, reason) is appended to it for each. A missing file
    reads as empty. One pass of a `MetricsFollower` (the same reader as `rltui watch`).
    """
    follower = MetricsFollower(Path(path), start=offset)
    events: list[Event] = []
    skipped: list[tuple[int, str]] = []
    try:
        while True:
            before = follower.offset
            update = follower.read()
            if update.reset:  # the file was replaced while being read: its new content only
                events.clear()
                skipped.clear()
            events.extend(update.events)
            skipped.extend(update.skipped)
            if follower.caught_up or follower.offset == before:
                break
        return events, follower.complete_offset
    finally:
        follower.close()
        if errors is not None:
            errors.extend(skipped)


# ------------------------------------------------------------------------------ following the log

MAX_LINE_BYTES = 16 << 20  # far above any real line (an eval of thousands of episodes is ~100 kB)
_TAIL_BYTES = 64  # bytes at the start and before the read offset compared to notice an in-place rewrite


def display_path(path: Path | str) -> str:
    """A path for messages: bytes that are not UTF-8 (surrogate-escaped) shown as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def os_reason(exc: OSError) -> str:
    """An OSError's reason in lower case, without its errno number or path."""
    return (exc.strerror or type(exc).__name__).lower() if exc.errno else " ".join(str(exc).split())


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MB" if n >= 1 << 20 else f"{n:,} bytes"


@dataclass
class FollowUpdate:
    """What one `MetricsFollower.read()` found."""

    events: list[Event] = field(default_factory=list)
    reset: bool = False  # the file started over: drop what was shown, `events` are from its start
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (byte offset of a skipped line, why)


class MetricsFollower:
    """Follows a run's metrics.jsonl while it grows. No Textual import.

    `read()` returns what was appended since the previous call as a `FollowUpdate`: the new events,
    whether the file started over (the reader must then drop what it showed and reload), warnings
    worth showing, and each skipped line. It never raises and never blocks on the file:

    - a last line without its newline is kept until the writer finishes it;
    - lines that are not valid events (garbage, not UTF-8, wrong field types, unknown kinds) are
      skipped, counted in `bad_lines`, and summarised in one warning per read;
    - a line longer than `max_line_bytes` is skipped without being held in memory;
    - the file is held open and identified by (device, inode): if another file takes its name
      (rename over it, delete and re-create), if it shrinks below what was read, or if its first
      bytes or those just before the read offset change (rewritten in place), it is read again from
      the start (`reset`);
    - if the file or the run directory disappears, what was read stays, the open file is still
      followed, and following resumes from the start of a new file when one appears;
    - a path that is not a regular file (a FIFO, a device, a directory) is never opened for reading.

    `start` is a byte offset to begin at, the start of a line (as `complete_offset` gives one).
    `poll()` is `read().events`.
    """

    def __init__(
        self, path: Path, chunk_bytes: int = 4 << 20, max_line_bytes: int = MAX_LINE_BYTES, *, start: int = 0
    ) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self.offset = start  # bytes of the open file consumed (a partial last line included)
        self.bad_lines = 0  # lines skipped since the file was last (re)opened
        self.line_number = 0  # complete lines consumed since then
        self._line_start = start  # file offset where the line being read begins
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._opened_once = False
        self._partial = b""
        self._skipping = False  # inside a line longer than max_line_bytes: drop bytes up to its newline
        self._head = b""  # the first and last bytes read, to notice an in-place rewrite
        self._tail = b""
        self._at_eof = False
        self._problem: str | None = None  # the last path problem warned about (warn once per problem)
        self._missing = False  # the path vanished after the file was opened
        self._read_problem: str | None = None

    # ---- public -----------------------------------------------------------------------------
    def poll(self) -> list[Event]:
        """Events appended since the last call (at most about `chunk_bytes` of file per call)."""
        return self.read().events

    def read(self) -> FollowUpdate:
        update = FollowUpdate()
        try:
            self._read(update)
            self._read_problem = None
        except OSError as exc:  # e.g. EIO on the open file: say so once, try again at the next call
            message = f"{LOG_NAME}: read failed ({os_reason(exc)}); retrying"
            if message != self._read_problem:
                self._read_problem = message
                self._warn(update, message)
        return update

    @property
    def caught_up(self) -> bool:
        """True when the last read reached the end of the file (or found no file to read)."""
        return self._at_eof

    @property
    def complete_offset(self) -> int:
        """The byte offset just after the last complete line read (where a partial line begins)."""
        return self._line_start

    def close(self) -> None:
        self._close()

    # ---- internals --------------------------------------------------------------------------
    def _read(self, update: FollowUpdate) -> None:
        st = self._stat_path(update)
        if st is not None:
            identity = (st.st_dev, st.st_ino)
            if self._fd is not None and identity != self._identity:
                self._close()
                how = "appeared again (a new file)" if self._missing else "was replaced by another file"
                self._start_over(update, f"{LOG_NAME} {how}; reloading")
            self._missing = False
            if self._fd is None and not self._open(update):
                return
        if self._fd is None:
            self._at_eof = True
            return
        size = os.fstat(self._fd).st_size
        if size < self.offset:
            self._start_over(update, f"{LOG_NAME} shrank from {self.offset:,} to {size:,} bytes "
                                     "(truncated or rewritten); reloading")
        elif self._rewritten():
            self._start_over(update, f"{LOG_NAME} was rewritten in place; reloading")
        data = os.pread(self._fd, self.chunk_bytes, self.offset)
        self._at_eof = self.offset + len(data) >= size and len(data) < self.chunk_bytes
        if not data:
            return
        if len(self._head) < _TAIL_BYTES:
            self._head = (self._head + data)[:_TAIL_BYTES]
        self.offset += len(data)
        self._tail = (self._tail + data)[-_TAIL_BYTES:]
        self._consume(data, update)

    def _rewritten(self) -> bool:
        """Whether the first or the last bytes already read have changed (same file, new content)."""
        assert self._fd is not None
        if self._head and os.pread(self._fd, len(self._head), 0) != self._head:
            return True
        return bool(self._tail) and os.pread(self._fd, len(self._tail), self.offset - len(self._tail)) != self._tail

    def _stat_path(self, update: FollowUpdate) -> os.stat_result | None:
        """stat() of the path, or None (after a warning, once per problem) if it cannot be followed."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                if not self._opened_once:
                    return None  # not created yet: the status bar says it is waiting
                self._missing = True
                if not os.path.isdir(self.path.parent):
                    problem = f"the run directory {display_path(self.path.parent)} was deleted"
                else:
                    problem = f"{LOG_NAME} was deleted"
                tail = "; following the open file until a new one appears" if self._fd is not None else ""
                self._warn_once(update, problem + tail)
            else:
                self._warn_once(update, f"{display_path(self.path)}: {os_reason(exc)}; retrying")
            return None
        if not stat.S_ISREG(st.st_mode):
            self._warn_once(update, f"{display_path(self.path)} is not a regular file; not reading it")
            return None
        if self._problem is not None and self._fd is not None and (st.st_dev, st.st_ino) == self._identity:
            self._problem = None  # the same file is back (e.g. permissions restored)
        return st

    def _open(self, update: FollowUpdate) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            self._warn_once(update, f"{display_path(self.path)}: cannot be read ({os_reason(exc)}); retrying")
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device between stat() and open()
            os.close(fd)
            return False
        if self._opened_once and not update.reset:  # closed after an error, or deleted: it may differ now
            self._start_over(update, f"{LOG_NAME} opened again; reloading")
        elif self.offset and not self._head:  # starting mid-file: what lies before is the file's start
            n = min(_TAIL_BYTES, self.offset)
            self._head, self._tail = os.pread(fd, n, 0), os.pread(fd, n, self.offset - n)
        self._fd, self._identity, self._opened_once, self._problem = fd, (st.st_dev, st.st_ino), True, None
        return True

    def _start_over(self, update: FollowUpdate, message: str) -> None:
        self.offset = self.line_number = self.bad_lines = self._line_start = 0
        self._partial, self._head, self._tail, self._skipping = b"", b"", b"", False
        update.events.clear()  # anything read before in this call belongs to the old file
        update.skipped.clear()
        update.reset = True
        self._warn(update, message)

    def _consume(self, data: bytes, update: FollowUpdate) -> None:
        lines = data.split(b"\n")
        last = lines.pop()  # bytes after the last newline (b"" if data ends with one)
        skipped: list[str] = []
        unknown: dict[str, int] = {}
        position = self.offset - len(data)  # file offset of data[0]
        too_long = f"longer than {_size(self.max_line_bytes)}"
        for i, piece in enumerate(lines):
            start = self._line_start
            position += len(piece) + 1
            self._line_start = position
            if i == 0:
                if self._skipping:
                    self._skipping = False
                    self.line_number += 1
                    skipped.append(f"line {self.line_number}: {too_long}")
                    update.skipped.append((start, too_long))
                    continue
                piece, self._partial = self._partial + piece, b""
            self.line_number += 1
            if not piece.strip():
                continue
            if len(piece) > self.max_line_bytes:
                skipped.append(f"line {self.line_number}: {too_long}")
                update.skipped.append((start, too_long))
                continue
            try:
                update.events.append(parse_event_line(piece))
            except UnknownEventKind as exc:
                name = str(exc).removeprefix("unknown event kind ")
                unknown[name] = unknown.get(name, 0) + 1
                update.skipped.append((start, str(exc)))
            except ValueError as exc:
                skipped.append(f"line {self.line_number}: {exc}")
                update.skipped.append((start, str(exc)))
        if lines:
            self._partial = b""
        if not self._skipping:
            if len(self._partial) + len(last) > self.max_line_bytes:
                self._partial, self._skipping = b"", True  # drop it as it comes, up to its newline
            else:
                self._partial += last
        self.bad_lines += len(skipped) + sum(unknown.values())
        if skipped:
            n = len(skipped)
            self._warn(update, f"{LOG_NAME}: skipped {n} malformed line{'s' * (n != 1)} "
                               f"({'first ' if n > 1 else ''}{skipped[0]})")
        if unknown:
            n, names = sum(unknown.values()), list(unknown)
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            self._warn(update, f"{LOG_NAME}: skipped {n} event{'s' * (n != 1)} of unknown kind {shown} "
                               "(written by a newer rltui?)")

    def _warn(self, update: FollowUpdate, message: str) -> None:
        update.warnings.append(message)

    def _warn_once(self, update: FollowUpdate, message: str) -> None:
        if message != self._problem:
            self._problem = message
            self._warn(update, message)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._identity = None, None

    def __del__(self) -> None:
        self._close()
