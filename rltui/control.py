"""The control socket of a live run: a Unix socket in the run directory, JSON lines in and out.

Every live run listens on `<run_dir>/control.sock` while `Engine.run()` runs (the engine starts a
`ControlServer` first thing and closes it last). `rltui ps` finds runs by their sockets, the
`ControlClient` talks to one, and `RemoteEngine` drives one with the same `state` and `submit()`
as a local `Engine`.

Protocol (version 1)
--------------------
The socket has mode 0600 and connections from another user are refused (the peer's credentials,
SO_PEERCRED). Requests and replies are JSON objects, one per line: UTF-8, ending in "\\n", at most
64 KiB a line. Blank lines are ignored. Each request gets exactly one reply line. Replies can come
in another order than the requests (a `status` is answered while an evaluation is still running),
so give requests an `id`: a string (at most 200 characters) or a number, echoed in the reply.

Requests (fields other than these are refused):

    {"command": "status"}
    {"command": "pause"}                             training stops between two steps
    {"command": "resume"}
    {"command": "checkpoint"}                        write a checkpoint now
    {"command": "evaluate", "episodes": 5}           deterministic episodes (the preset's number if left out), 1..10000
    {"command": "eval_mode", "on": true}             evaluation mode on (training pauses) or off
    {"command": "stop", "final_checkpoint": true}    end the run (a final checkpoint unless false)

  and in any request: "id" (echoed) and "timeout" (seconds to wait for a command to take effect,
  default 2, at most 3600).

Replies:

    {"ok": true, "message": "...", "data": {...}, "id": ...}

  - `status` is answered by the server itself from the run's events, never by the training loop,
    so it answers at once even during a long update. `data`: pid, run_dir, name, algo, env_id,
    device, state ("starting", "running", "paused", "evaluating", "finished", "failed"), message,
    step, total_steps, steps_per_s, updates_per_s, episodes, updates, started (unix time),
    last_eval ({step, return_mean, return_std, episodes} or null), last_checkpoint ({step, path}
    or null), protocol (1). Numbers not known yet are null. Paths (run_dir, a checkpoint's path,
    here and in replies) are absolute.
  - the other commands are handed to the engine; the reply comes once the command took effect
    (the engine's `Reply`: checkpoint data {path, step}; evaluate data {return_mean, return_std,
    episodes, step}; stop once the run ended). If it did not take effect within `timeout`, the reply
    is `{"ok": true, "pending": true, "message": ..., "data": {}}`; the command still takes effect
    later, and no second reply follows.
  - errors have "ok": false and a one-line message: malformed JSON, not an object, a line over
    64 KiB (the connection is closed after that reply), an unknown command or field, a bad value,
    more than 16 requests in flight on one connection, the run has ended.

Limits: 16 connections at once (more get one refusal line and are closed), 100 requests a second
per connection (more wait their turn), a connection that sends nothing and has nothing in flight for
5 minutes is closed. One server thread serves everything with non-blocking sockets, so a silent or
flooding client holds up neither training nor other clients.

    $ printf '{"command": "status", "id": 1}\\n' | socat - UNIX-CONNECT:saves/<run>/control.sock

Long run directories: a Unix socket address holds at most 107 bytes, so a longer path is bound and
connected through `/proc/self/fd/<fd of the run directory>/control.sock` (Linux).
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import ctypes.util
import errno
import functools
import itertools
import json
import math
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rltui.commands import Command, CommandError, Reply, Stop, command_from_json
from rltui.events import CheckpointSaved, EvalResult, Event, RunState, StateChanged

if TYPE_CHECKING:
    from rltui.history import MetricsHistory

PROTOCOL_VERSION = 1
SOCKET_NAME = "control.sock"
MAX_ADDRESS_BYTES = 107  # sun_path holds 108 bytes with the terminating NUL (Linux)
PROC_FD = "/proc/self/fd"

MAX_LINE_BYTES = 64 * 1024
MAX_ID_CHARS = 200
MAX_CLIENTS = 16
MAX_IN_FLIGHT = 16  # commands waiting for the engine, per connection
REQUESTS_PER_S = 100.0  # per connection, with bursts of as many
OUTPUT_HIGH_BYTES = 256 * 1024  # replies not yet read by the client: stop reading its requests above this
IDLE_TIMEOUT_S = 300.0
DEFAULT_TIMEOUT_S = 2.0
MAX_TIMEOUT_S = 3600.0
CLOSE_FLUSH_S = 1.0  # how long close() tries to hand out the last replies
REQUEST_FIELDS = {"command", "id", "timeout"}


class ControlError(Exception):
    """The control socket cannot be made or reached; str() is a one-line message."""


class NotLiveError(ControlError):
    """No run listens on the socket: it does not exist, or is stale (left by a killed run)."""

    def __init__(self, message: str, *, stale: bool) -> None:
        super().__init__(message)
        self.stale = stale


def socket_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / SOCKET_NAME


@contextmanager
def _address(path: Path) -> Iterator[str]:
    """An AF_UNIX address for `path`: the path itself if it fits, else via /proc/self/fd (Linux)."""
    if len(os.fsencode(path)) <= MAX_ADDRESS_BYTES:
        yield str(path)
        return
    if not os.path.isdir(PROC_FD) or not hasattr(os, "O_PATH"):
        raise ControlError(f"{path}: too long for a Unix socket address ({len(os.fsencode(path))} bytes, at most "
                           f"{MAX_ADDRESS_BYTES}) and no {PROC_FD} to reach it by a short name")
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"{PROC_FD}/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a connected Unix socket; None where unknown."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    return _getpeereid(sock.fileno())


def _getpeereid(fd: int) -> int | None:
    """getpeereid(3) (the BSDs, macOS) through libc; None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    function = getattr(libc, "getpeereid", None)
    if function is None:
        return None
    uid, gid = ctypes.c_uint32(), ctypes.c_uint32()
    if function(fd, ctypes.byref(uid), ctypes.byref(gid)) != 0:
        return None
    return int(uid.value)


def _json_safe(value: Any) -> Any:
    """Non-finite floats as None, tuples as lists, anything else that JSON lacks as its str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def encode_line(payload: dict[str, Any]) -> bytes:
    return json.dumps(_json_safe(payload), allow_nan=False, separators=(",", ":")).encode() + b"\n"


def reply_json(reply: Reply, request_id: Any = None, *, pending: bool = False) -> dict[str, Any]:
    """A protocol reply: ok, message, data (always present), id (when the request had one)."""
    out: dict[str, Any] = {"ok": reply.ok, "message": reply.message, "data": dict(reply.data)}
    if pending:
        out["pending"] = True
    if request_id is not None:
        out["id"] = request_id
    return out


# ------------------------------------------------------------------------------------------ server


class ControlledEngine(Protocol):
    """What the server needs of the engine."""

    algo: str
    total_steps: int

    @property
    def state(self) -> RunState: ...
    def subscribe(self, callback: Callable[[Event], None]) -> None: ...
    def submit(self, command: Command) -> concurrent.futures.Future[Reply]: ...


@dataclass
class _Conn:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    last_active: float = 0.0
    tokens: float = REQUESTS_PER_S
    tokens_at: float = 0.0
    in_flight: set[int] = field(default_factory=set)
    eof: bool = False  # the client shut its sending side: answer what it sent, then close
    closing: bool = False  # close once the replies are out (oversized line, refusal)
    mask: int = 0


@dataclass
class _InFlight:
    conn: _Conn
    request_id: Any
    name: str
    deadline: float


class ControlServer:
    """Serves the control socket of `engine`'s run in one thread (see the module docstring).

    `start()` binds `<run_dir>/control.sock` (replacing a stale one), subscribes a MetricsHistory to
    the engine for `status`, and starts the thread; call it on the engine thread before the run's
    first event. `close()` hands out the last replies (at most a second), closes every connection and
    removes the socket; it can be called from any thread, more than once, also before `start()`.
    Neither ever waits for the training loop. `start()` raises ControlError with a one-line message
    when the socket cannot be made; the run can go on without one.
    """

    def __init__(self, engine: ControlledEngine, run_dir: Path | str, *, idle_timeout: float = IDLE_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from rltui.history import MetricsHistory  # numpy; not needed by clients

        self.engine = engine
        self.run_dir = Path(os.path.abspath(run_dir))
        self.path = socket_path(self.run_dir)
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.history: MetricsHistory = MetricsHistory(capacity=16, log_size=1)
        self._last_eval: dict[str, Any] | None = None
        self._last_checkpoint: dict[str, Any] | None = None
        self._listener: socket.socket | None = None
        self._inode: tuple[int, int] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._done: collections.deque[tuple[int, concurrent.futures.Future[Reply]]] = collections.deque()
        self._in_flight: dict[int, _InFlight] = {}
        self._keys = itertools.count(1)
        self._conns: dict[int, _Conn] = {}
        self._accept_again_at: float | None = None

    # ---- engine side ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or self._closing.is_set():
            raise RuntimeError("ControlServer.start() can only be called once, before close()")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind(listener)
            listener.listen(MAX_CLIENTS)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot listen on {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.engine.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._serve, name="rltui-control", daemon=True)
        self._thread.start()

    def _bind(self, listener: socket.socket) -> None:
        """Bind to the socket path with mode 0600, replacing what a killed run left there."""
        with _address(self.path) as address:
            try:
                listener.bind(address)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                self._remove_stale(address)
                listener.bind(address)
            os.chmod(address, stat.S_IRUSR | stat.S_IWUSR)
            st = os.stat(address)
        self._inode = (st.st_dev, st.st_ino)

    def _remove_stale(self, address: str) -> None:
        """The engine holds the run directory's lock, so a socket already there is a killed run's."""
        st = os.lstat(address)
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path}: exists and is not a socket (remove it to make the run reachable)")
        os.unlink(address)

    def close(self) -> None:
        self._closing.set()
        thread = self._thread
        if thread is None:
            return
        self._wake()
        if thread is not threading.current_thread():
            thread.join(CLOSE_FLUSH_S + 2.0)
        self._unlink()  # (the thread did, unless it is stuck)

    def _on_event(self, event: Event) -> None:
        """Engine thread: keep what `status` reports. Returns at once."""
        self.history(event)
        if isinstance(event, EvalResult) and event.source != "manual":
            self._last_eval = {"step": event.step, "return_mean": event.return_mean,
                               "return_std": event.return_std, "episodes": event.episodes}
        elif isinstance(event, CheckpointSaved):
            self._last_checkpoint = {"step": event.step, "path": os.path.abspath(event.path)}

    def _wake(self) -> None:
        sock = self._wake_w
        if sock is None:
            return
        try:
            sock.send(b"\0")
        except OSError:  # a wake-up is pending already (the buffer is full), or the server is gone
            pass

    def _command_done(self, key: int, future: concurrent.futures.Future[Reply]) -> None:
        """Engine thread (or this one, if already done): queue the reply for the server thread."""
        self._done.append((key, future))
        self._wake()

    # ---- the server thread ------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._selector is not None
        try:
            while not self._closing.is_set():
                for key, mask in self._selector.select(self._select_timeout()):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn = self._conns.get(key.fd)
                        if conn is not None:
                            if mask & selectors.EVENT_READ:
                                self._read(conn)
                            if mask & selectors.EVENT_WRITE:
                                self._write(conn)
                self._tick()
            self._final_flush()
        finally:
            self._shutdown()

    def _select_timeout(self) -> float:
        now = self.clock()
        deadline = now + 1.0
        for entry in self._in_flight.values():
            deadline = min(deadline, entry.deadline)
        for conn in self._conns.values():
            if conn.tokens < 1.0:
                deadline = min(deadline, now + (1.0 - conn.tokens) / REQUESTS_PER_S)
            elif b"\n" in conn.inbuf and not conn.closing and len(conn.outbuf) < OUTPUT_HIGH_BYTES:
                return 0.0  # requests read but not handled yet
        return max(0.0, deadline - now)

    def _tick(self) -> None:
        """Everything that is not a socket event: replies of finished commands, timeouts, buffered
        requests, idle connections, and what each connection waits for next."""
        now = self.clock()
        if self._accept_again_at is not None and now >= self._accept_again_at and self._listener is not None:
            assert self._selector is not None
            self._selector.register(self._listener, selectors.EVENT_READ, "listener")
            self._accept_again_at = None
        self._deliver_done()
        for key, entry in list(self._in_flight.items()):
            if entry.deadline <= now:
                del self._in_flight[key]
                entry.conn.in_flight.discard(key)
                message = f"{entry.name}: accepted, not in effect yet; it takes effect in the run"
                self._send(entry.conn, reply_json(Reply(True, message), entry.request_id, pending=True))
        for conn in list(self._conns.values()):
            self._refill(conn, now)
            self._handle_lines(conn)
            if conn.sock.fileno() < 0:
                continue
            if conn.closing:  # its last reply is out, or the client does not read it
                over = not conn.outbuf or now - conn.last_active > CLOSE_FLUSH_S
            elif conn.eof:  # everything it asked is answered
                over = not conn.in_flight and not conn.outbuf and not conn.inbuf.strip()
            else:
                over = not conn.in_flight and now - conn.last_active > self.idle_timeout
            if over:
                self._drop(conn)
                continue
            self._update_mask(conn)

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of file descriptors: leave the clients in the backlog for a second
                self._selector.unregister(self._listener)
                self._accept_again_at = self.clock() + 1.0
                return
            sock.setblocking(False)
            refusal = self._refusal(sock)
            if refusal is not None:
                try:
                    sock.send(encode_line(reply_json(Reply(False, refusal))))
                except OSError:
                    pass
                sock.close()
                continue
            conn = _Conn(sock, last_active=self.clock(), tokens_at=self.clock())
            self._conns[sock.fileno()] = conn
            self._update_mask(conn)

    def _refusal(self, sock: socket.socket) -> str | None:
        try:
            uid = peer_uid(sock)
        except OSError:
            uid = None
        if uid is not None and uid != os.geteuid():
            return f"refused: this run belongs to user {os.geteuid()}, the connection comes from user {uid}"
        if len(self._conns) >= MAX_CLIENTS:
            return f"refused: {MAX_CLIENTS} clients are connected already"
        return None

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            conn.eof = True
            return
        conn.last_active = self.clock()
        conn.inbuf += data

    def _write(self, conn: _Conn) -> None:
        if not conn.outbuf:
            return
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the client went away
            self._drop(conn)
            return
        del conn.outbuf[:sent]
        conn.last_active = self.clock()

    def _send(self, conn: _Conn, payload: dict[str, Any]) -> None:
        if conn.sock.fileno() < 0:
            return
        conn.outbuf += encode_line(payload)
        self._write(conn)

    def _refill(self, conn: _Conn, now: float) -> None:
        conn.tokens = min(REQUESTS_PER_S, conn.tokens + (now - conn.tokens_at) * REQUESTS_PER_S)
        conn.tokens_at = now

    def _handle_lines(self, conn: _Conn) -> None:
        while not conn.closing and conn.tokens >= 1.0 and len(conn.outbuf) < OUTPUT_HIGH_BYTES:
            end = conn.inbuf.find(b"\n", 0, MAX_LINE_BYTES)
            if end < 0:
                if len(conn.inbuf) >= MAX_LINE_BYTES or (conn.eof and conn.inbuf.strip()):
                    self._refuse_line(conn)
                return
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[: end + 1]
            if not line.strip():
                continue
            conn.tokens -= 1.0
            self._handle(conn, line)

    def _refuse_line(self, conn: _Conn) -> None:
        if conn.eof and len(conn.inbuf) < MAX_LINE_BYTES:
            message = "malformed request: the connection ended in the middle of a line (a request ends with a newline)"
        else:
            message = f"request line longer than {MAX_LINE_BYTES} bytes: connection closed"
        conn.inbuf.clear()
        conn.closing = True
        conn.last_active = self.clock()
        self._send(conn, reply_json(Reply(False, message)))

    def _handle(self, conn: _Conn, line: bytes) -> None:
        try:
            payload = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            self._send(conn, reply_json(Reply(False, "malformed request: not UTF-8")))
            return
        except (ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            self._send(conn, reply_json(Reply(False, f"malformed request: not JSON ({reason})")))
            return
        if not isinstance(payload, dict):
            self._send(conn, reply_json(Reply(False, f"malformed request: expected a JSON object, got "
                                                     f"{type(payload).__name__}")))
            return
        request_id = payload.get("id")
        if not _valid_id(request_id):
            self._send(conn, reply_json(Reply(False, f"id must be a string of at most {MAX_ID_CHARS} characters "
                                                     "or a number")))
            return
        timeout = payload.get("timeout", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
            self._send(conn, reply_json(Reply(False, f"timeout must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]"),
                                        request_id))
            return
        if payload.get("command") == "status":
            extra = sorted(set(payload) - REQUEST_FIELDS)
            if extra:
                self._send(conn, reply_json(Reply(False, f"status: unknown field {extra[0][:40]!r}"), request_id))
            else:
                self._send(conn, reply_json(Reply(True, "", self.status()), request_id))
            return
        try:
            command = command_from_json(payload)
        except CommandError as exc:
            self._send(conn, reply_json(Reply(False, str(exc)), request_id))
            return
        if len(conn.in_flight) >= MAX_IN_FLIGHT:
            self._send(conn, reply_json(Reply(False, f"{command.name}: {MAX_IN_FLIGHT} commands are in flight on this "
                                                     "connection already; wait for their replies"), request_id))
            return
        try:
            future = self.engine.submit(command)
        except Exception as exc:  # noqa: BLE001 - a broken engine must not take the server down
            self._send(conn, reply_json(Reply(False, f"{command.name}: {type(exc).__name__}: {exc}"), request_id))
            return
        key = next(self._keys)
        self._in_flight[key] = _InFlight(conn, request_id, command.name, self.clock() + float(timeout))
        conn.in_flight.add(key)
        future.add_done_callback(functools.partial(self._command_done, key))

    def _deliver_done(self) -> None:
        while self._done:
            key, future = self._done.popleft()
            entry = self._in_flight.pop(key, None)
            if entry is None:  # answered "pending" already, or the client left
                continue
            entry.conn.in_flight.discard(key)
            try:
                reply = future.result(timeout=0)
            except BaseException as exc:  # noqa: BLE001 - a failed future still gets its one reply
                reply = Reply(False, f"{entry.name}: {type(exc).__name__}: {exc}")
            if not isinstance(reply, Reply):
                reply = Reply(False, f"{entry.name}: the engine replied {type(reply).__name__}, not a Reply")
            elif isinstance(reply.data.get("path"), str):  # a client elsewhere cannot know this process's cwd
                reply = Reply(reply.ok, reply.message, {**reply.data, "path": os.path.abspath(reply.data["path"])})
            self._send(entry.conn, reply_json(reply, entry.request_id))

    def _update_mask(self, conn: _Conn) -> None:
        assert self._selector is not None
        mask = 0
        if not (conn.eof or conn.closing) and conn.tokens >= 1.0 and len(conn.outbuf) < OUTPUT_HIGH_BYTES \
                and len(conn.inbuf) < MAX_LINE_BYTES:
            mask |= selectors.EVENT_READ
        if conn.outbuf:
            mask |= selectors.EVENT_WRITE
        if mask == conn.mask:
            return
        if conn.mask == 0:
            self._selector.register(conn.sock, mask)
        elif mask == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, mask)
        conn.mask = mask

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        if conn.mask and self._selector is not None:
            self._selector.unregister(conn.sock)
            conn.mask = 0
        self._conns.pop(fd, None)
        for key in conn.in_flight:
            self._in_flight.pop(key, None)
        conn.in_flight.clear()
        conn.sock.close()

    def _final_flush(self) -> None:
        """The run ended: answer what is left, then try for a moment to hand the replies out."""
        if self._listener is not None:
            if self._selector is not None and self._accept_again_at is None:
                self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self._unlink()
        self._deliver_done()
        for entry in self._in_flight.values():
            self._send(entry.conn, reply_json(Reply(False, "the run has ended"), entry.request_id))
        self._in_flight.clear()
        deadline = self.clock() + CLOSE_FLUSH_S
        while self.clock() < deadline:
            waiting = [conn for conn in self._conns.values() if conn.outbuf]
            if not waiting:
                break
            for conn in waiting:
                self._write(conn)
            if any(conn.outbuf for conn in self._conns.values()):
                time.sleep(0.01)

    def _shutdown(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._unlink()
        if self._selector is not None:
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_w = None

    def _unlink(self) -> None:
        """Remove the socket file, if it is still the one this server bound."""
        if self._inode is None:
            return
        try:
            with _address(self.path) as address:
                st = os.lstat(address)
                if (st.st_dev, st.st_ino) == self._inode:
                    os.unlink(address)
        except (OSError, ControlError):
            pass
        self._inode = None

    # ---- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What `status` answers (thread-safe; never waits for the training loop)."""
        snapshot = self.history.status()
        info = snapshot.info
        return {
            "pid": os.getpid(),
            "run_dir": str(self.run_dir),
            "name": info.name if info else None,
            "algo": info.algo if info else getattr(self.engine, "algo", None),
            "env_id": info.env_id if info else None,
            "device": info.device if info else None,
            "state": snapshot.state.value,
            "message": snapshot.message,
            "step": snapshot.step,
            "total_steps": snapshot.total_steps or getattr(self.engine, "total_steps", None),
            "steps_per_s": snapshot.steps_per_s,
            "updates_per_s": snapshot.updates_per_s,
            "episodes": snapshot.episodes,
            "updates": snapshot.updates,
            "started": snapshot.start_time,
            "last_eval": self._last_eval,
            "last_checkpoint": self._last_checkpoint,
            "protocol": PROTOCOL_VERSION,
        }


def _valid_id(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return value is None
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    if isinstance(value, int):
        return abs(value) < 2**63
    return isinstance(value, float) and math.isfinite(value)


# ------------------------------------------------------------------------------------------ client

DEFAULT_CLIENT_TIMEOUT_S = 5.0
REPLY_MARGIN_S = 5.0  # a command's reply is awaited this much longer than the server's timeout
MAX_REPLY_BYTES = 1 << 20


class ControlClient:
    """One connection to a run's control socket. Thread-safe; requests can overlap.

        with ControlClient(socket_path(run_dir)) as client:
            client.status()                          # the status data (a dict)
            client.request("checkpoint")             # the whole reply: {"ok", "message", "data", ...}
            client.request("evaluate", episodes=3, timeout=60)

    Raises NotLiveError when nobody listens (no socket, or a stale one) and ControlError for other
    failures: a refusal, no reply in time, a lost connection.
    """

    def __init__(self, path: Path | str, timeout: float = DEFAULT_CLIENT_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.timeout = timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            with _address(self.path) as address:
                sock.connect(address)
        except (FileNotFoundError, NotADirectoryError):
            sock.close()
            raise NotLiveError(f"{self.path}: no control socket (the run is not live)", stale=False) from None
        except ConnectionRefusedError:
            sock.close()
            raise NotLiveError(f"{self.path}: nobody listens (a stale socket left by a run that was killed)",
                               stale=True) from None
        except TimeoutError:
            sock.close()
            raise ControlError(f"{self.path}: the run did not accept the connection within {timeout:g} s") from None
        except OSError as exc:
            sock.close()
            raise ControlError(f"{self.path}: {(exc.strerror or str(exc)).lower()}") from None
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        self._sock = sock
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._futures: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._closed: str | None = None  # why the connection is over
        self._reader = threading.Thread(target=self._read_loop, name="rltui-control-client", daemon=True)
        self._reader.start()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._closed is None

    def send(self, payload: dict[str, Any]) -> concurrent.futures.Future[dict[str, Any]]:
        """Send one request (its `id` is set here); the future resolves with the reply object, or
        fails with ControlError when the connection ends first."""
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self._closed is not None:
                future.set_exception(ControlError(self._closed))
                return future
            request_id = next(self._ids)
            self._futures[request_id] = future
        try:
            line = encode_line({**payload, "id": request_id})
            with self._send_lock:
                self._sock.sendall(line)
        except OSError as exc:  # closed by the run: the reader has its last word (a refusal?) and the end
            if self._reader is not threading.current_thread():
                self._reader.join(1.0)
            self._fail(f"{self.path}: cannot send ({(exc.strerror or str(exc)).lower()})")
        return future

    def request(self, command: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send `command` with `fields` and wait for its reply; `timeout` is the server's wait for a
        command to take effect (the reply is `pending` after it)."""
        payload: dict[str, Any] = {"command": command, **fields}
        if timeout is not None:
            payload["timeout"] = timeout
        wait = self.timeout if command == "status" else (timeout or DEFAULT_TIMEOUT_S) + REPLY_MARGIN_S
        future = self.send(payload)
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            raise ControlError(f"{self.path}: no reply to {command} within {wait:g} s") from None

    def status(self) -> dict[str, Any]:
        """The run's status data (see the module docstring); ControlError if refused."""
        reply = self.request("status")
        if not reply.get("ok") or not isinstance(reply.get("data"), dict):
            raise ControlError(f"{self.path}: status refused: {reply.get('message')}")
        return dict(reply["data"])

    def close(self) -> None:
        self._fail("the connection was closed")
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(1.0)
        self._sock.close()

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.set_exception(ControlError(self._closed or reason))

    def _read_loop(self) -> None:
        buffer = bytearray()
        reason = f"{self.path}: the run closed the connection"
        last_word: str | None = None  # a message the run sent to no request (a refusal) says why
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                buffer += data
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    unsolicited = self._dispatch(line)
                    if unsolicited:
                        last_word = f"{self.path}: {unsolicited}"
                if len(buffer) > MAX_REPLY_BYTES:
                    reason, last_word = f"{self.path}: a reply longer than {MAX_REPLY_BYTES} bytes", None
                    break
        except OSError as exc:
            reason = f"{self.path}: connection lost ({(exc.strerror or str(exc)).lower()})"
        finally:
            # A run that refuses a client closes with the client's request unread, which can reset
            # the connection after the refusal arrived: the refusal is the reason, not the reset.
            self._fail(last_word or reason)

    def _dispatch(self, line: bytes) -> str | None:
        """Resolve the request a reply answers; returns the message of a reply to no request."""
        try:
            reply = json.loads(line)
        except ValueError:
            return "a reply that is not JSON"
        if not isinstance(reply, dict):
            return "a reply that is not a JSON object"
        with self._lock:
            request_id = reply.get("id")
            future = None
            if isinstance(request_id, int) and not isinstance(request_id, bool):
                future = self._futures.pop(request_id, None)
        if future is None:
            return str(reply.get("message", "an unexpected reply"))
        if not future.done():
            future.set_result(reply)
        return None


def reply_from_json(payload: dict[str, Any]) -> Reply:
    """A protocol reply as a `Reply` (a pending one with data {"pending": true})."""
    data = payload.get("data")
    data = dict(data) if isinstance(data, dict) else {}
    if payload.get("pending"):
        data["pending"] = True
    return Reply(bool(payload.get("ok")), str(payload.get("message", "")), data)


# ------------------------------------------------------------------------------------------ remote


class RemoteEngine:
    """A live run in another process, driven like a local Engine: `state`, `algo`, `run_dir`,
    `total_steps`, `step` and `submit(command) -> Future[Reply]` (never blocks).

    A thread polls `status` every `poll_s` seconds; `state`, `step` and `status()` return the latest
    answer at once. A submitted command resolves when it took effect in the run (the server is asked
    to wait up to an hour before answering "pending"). Once the connection is gone the run has
    ended: `state` is the final state its run log recorded, or FAILED if it recorded none (the
    process was killed), which is then also told to the `subscribe`d callbacks as a StateChanged
    event (the run's own log cannot say it); `submit` resolves with Reply(ok=False, "the run has
    ended").
    """

    COMMAND_WAIT_S = MAX_TIMEOUT_S

    def __init__(self, run_dir: Path | str, poll_s: float = 0.5, timeout: float = DEFAULT_CLIENT_TIMEOUT_S) -> None:
        self.client = ControlClient(socket_path(run_dir), timeout=timeout)
        try:
            first = self.client.status()
        except BaseException:
            self.client.close()
            raise
        self._status = first
        self.run_dir = Path(first["run_dir"])
        self.algo = str(first.get("algo") or "")
        self.total_steps = int(first.get("total_steps") or 0)
        self.pid = int(first["pid"])
        self.poll_s = poll_s
        self._ended_state: RunState | None = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="rltui-remote-status", daemon=True)
        self._poller.start()

    @property
    def state(self) -> RunState:
        if self._ended_state is not None:
            return self._ended_state
        try:
            return RunState(self._status.get("state"))
        except ValueError:
            return RunState.STARTING

    @property
    def step(self) -> int:
        return int(self._status.get("step") or 0)

    @property
    def connected(self) -> bool:
        return self.client.connected

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def subscribe(self, subscriber: Callable[[Event], None]) -> None:
        """`subscriber` is told what the run's log cannot say: that its process ended without it."""
        self._subscribers.append(subscriber)

    def submit(self, command: Command) -> concurrent.futures.Future[Reply]:
        result: concurrent.futures.Future[Reply] = concurrent.futures.Future()
        sent = self.client.send({**command.to_json(), "timeout": self.COMMAND_WAIT_S})

        def done(future: concurrent.futures.Future[dict[str, Any]]) -> None:
            try:
                reply = reply_from_json(future.result())
            except ControlError:
                reply = (Reply(True, "the run has ended") if isinstance(command, Stop)
                         else Reply(False, "the run has ended"))
            result.set_result(reply)

        sent.add_done_callback(done)
        return result

    def close(self) -> None:
        self._stop.set()
        self.client.close()
        if self._poller is not threading.current_thread():
            self._poller.join(2.0)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._status = self.client.status()
            except ControlError:
                if not self.client.connected:
                    break
        if self._stop.is_set():
            return
        logged = _last_logged_state(self.run_dir)
        if logged is not None and logged.is_final:
            self._ended_state = logged
            return
        self._ended_state = RunState.FAILED
        lost = StateChanged(step=self.step, state=RunState.FAILED,
                            message=f"the run's process (pid {self.pid}) ended without a word: killed or crashed; "
                                    f"`rltui resume {self.run_dir}` goes on from its last checkpoint")
        for subscriber in self._subscribers:
            subscriber(lost)


def _last_logged_state(run_dir: Path, tail_bytes: int = 256 * 1024) -> RunState | None:
    """The state of the last `state` event in the run log's last `tail_bytes`, None if none."""
    from rltui.runlog import LOG_NAME

    try:
        with open(run_dir / LOG_NAME, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - tail_bytes))
            lines = handle.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        if b'"state"' not in raw:
            continue
        try:
            payload = json.loads(raw)
            if payload.get("event") == "state":
                return RunState(payload.get("state"))
        except (ValueError, AttributeError):
            continue
    return None
