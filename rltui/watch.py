"""Follow a run's metrics.jsonl while it grows (for `rltui watch`). No Textual import.

`MetricsFollower.read()` returns what was appended since the previous call as a `FollowUpdate`:
the new events, whether the file started over (the reader must then drop what it showed and
reload), and warnings worth showing. It never raises and never blocks on the file:

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

`poll()` is `read().events`. `check_run_dir()` is the up-front check of `rltui watch RUN_DIR`.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rltui.events import Event, UnknownEventKind
from rltui.runlog import LOG_NAME, parse_event_line

METRICS_FILE = LOG_NAME
MAX_LINE_BYTES = 16 << 20  # far above any real line (an eval of thousands of episodes is ~100 kB)
_TAIL_BYTES = 64  # bytes at the start and before the read offset compared to notice an in-place rewrite


class WatchError(ValueError):
    """A RUN_DIR that `rltui watch` cannot follow; str() is the one-line message."""


def display_path(path: Path | str) -> str:
    """A path for messages: bytes that are not UTF-8 (surrogate-escaped) shown as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def check_run_dir(run_dir: Path | str) -> Path:
    """The run directory `rltui watch` may follow, or WatchError saying what is wrong with it.

    Needs a directory holding a readable regular file metrics.jsonl (created by `rltui train`
    as the run starts). Nothing is written.
    """
    if str(run_dir) == "":
        raise WatchError("RUN_DIR is an empty string (expected a run directory)")
    run_dir = Path(run_dir)
    shown = display_path(run_dir)
    try:
        st = os.stat(run_dir)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise WatchError(f"{shown}: no such directory (expected a run directory)") from None
        raise WatchError(f"{shown}: {_os_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise WatchError(f"{shown}: not a directory (expected a run directory, not a file)")
    log = run_dir / METRICS_FILE
    try:
        st = os.stat(log)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise WatchError(f"{shown}: no {METRICS_FILE} (expected a run directory made by `rltui train`)") from None
        raise WatchError(f"{display_path(log)}: {_os_reason(exc)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise WatchError(f"{display_path(log)}: not a regular file")
    try:
        fd = os.open(log, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise WatchError(f"{display_path(log)}: cannot be read ({_os_reason(exc)})") from None
    os.close(fd)
    return run_dir


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MB" if n >= 1 << 20 else f"{n:,} bytes"


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower() if exc.errno else " ".join(str(exc).split())


@dataclass
class FollowUpdate:
    """What one `MetricsFollower.read()` found."""

    events: list[Event] = field(default_factory=list)
    reset: bool = False  # the file started over: drop what was shown, `events` are from its start
    warnings: list[str] = field(default_factory=list)


class MetricsFollower:
    def __init__(self, path: Path, chunk_bytes: int = 4 << 20, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.path = Path(path)
        self.chunk_bytes = chunk_bytes
        self.max_line_bytes = max_line_bytes
        self.offset = 0  # bytes of the open file consumed (a partial last line included)
        self.bad_lines = 0  # lines skipped since the file was last (re)opened
        self.line_number = 0  # complete lines consumed since then
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
            message = f"{METRICS_FILE}: read failed ({_os_reason(exc)}); retrying"
            if message != self._read_problem:
                self._read_problem = message
                self._warn(update, message)
        return update

    @property
    def caught_up(self) -> bool:
        """True when the last read reached the end of the file (or found no file to read)."""
        return self._at_eof

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
                self._start_over(update, f"{METRICS_FILE} {how}; reloading")
            self._missing = False
            if self._fd is None and not self._open(update):
                return
        if self._fd is None:
            self._at_eof = True
            return
        size = os.fstat(self._fd).st_size
        if size < self.offset:
            self._start_over(update, f"{METRICS_FILE} shrank from {self.offset:,} to {size:,} bytes "
                                     "(truncated or rewritten); reloading")
        elif self._rewritten():
            self._start_over(update, f"{METRICS_FILE} was rewritten in place; reloading")
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
                    problem = f"{METRICS_FILE} was deleted"
                tail = "; following the open file until a new one appears" if self._fd is not None else ""
                self._warn_once(update, problem + tail)
            else:
                self._warn_once(update, f"{display_path(self.path)}: {_os_reason(exc)}; retrying")
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
            self._warn_once(update, f"{display_path(self.path)}: cannot be read ({_os_reason(exc)}); retrying")
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device between stat() and open()
            os.close(fd)
            return False
        if self._opened_once and not update.reset:  # closed after an error, or deleted: it may differ now
            self._start_over(update, f"{METRICS_FILE} opened again; reloading")
        self._fd, self._identity, self._opened_once, self._problem = fd, (st.st_dev, st.st_ino), True, None
        return True

    def _start_over(self, update: FollowUpdate, message: str) -> None:
        self.offset = self.line_number = self.bad_lines = 0
        self._partial, self._head, self._tail, self._skipping = b"", b"", b"", False
        update.events.clear()  # anything read before in this call belongs to the old file
        update.reset = True
        self._warn(update, message)

    def _consume(self, data: bytes, update: FollowUpdate) -> None:
        lines = data.split(b"\n")
        last = lines.pop()  # bytes after the last newline (b"" if data ends with one)
        skipped: list[str] = []
        unknown: dict[str, int] = {}
        for i, piece in enumerate(lines):
            if i == 0:
                if self._skipping:
                    self._skipping = False
                    self.line_number += 1
                    skipped.append(f"line {self.line_number}: longer than {_size(self.max_line_bytes)}")
                    continue
                piece, self._partial = self._partial + piece, b""
            self.line_number += 1
            if not piece.strip():
                continue
            if len(piece) > self.max_line_bytes:
                skipped.append(f"line {self.line_number}: longer than {_size(self.max_line_bytes)}")
                continue
            try:
                update.events.append(parse_event_line(piece))
            except UnknownEventKind as exc:
                name = str(exc).removeprefix("unknown event kind ")
                unknown[name] = unknown.get(name, 0) + 1
            except ValueError as exc:
                skipped.append(f"line {self.line_number}: {exc}")
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
            self._warn(update, f"{METRICS_FILE}: skipped {n} malformed line{'s' * (n != 1)} "
                               f"({'first ' if n > 1 else ''}{skipped[0]})")
        if unknown:
            n, names = sum(unknown.values()), list(unknown)
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            self._warn(update, f"{METRICS_FILE}: skipped {n} event{'s' * (n != 1)} of unknown kind {shown} "
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
